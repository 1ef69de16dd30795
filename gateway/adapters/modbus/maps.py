"""Meter map files: one device model's registers as YAML (docs/modbus.md has the format).

Bundled maps live next to this module in ``maps/<name>.yaml`` (package data) and are chosen
with ``meter: <name>``; an integrator's own map is a path (``meter: ./maps/my_meter.yaml``).
Loading validates the whole file, so a wrong map is refused by ``config check`` with the
file, the register index and the field, not by the first poll.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Self

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .registers import RegisterDefaults, RegisterSpec, ResolvedRegister, overlap

MAPS_DIR = Path(__file__).with_name("maps")
MAP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class MapError(ValueError):
    """A map name that is not bundled, or a map file that cannot be read or is invalid."""


class MeterMap(BaseModel):
    """One device model's register table, taken from its vendor's documentation."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="Lowercase, digits and `_`; a bundled map's file stem.")
    title: str = Field(description="The device in words (maker, model, variant).")
    source: str = Field(
        min_length=1, description="The vendor document the register table was taken from."
    )
    defaults: RegisterDefaults = Field(
        default_factory=RegisterDefaults,
        description="Applied to every register that does not say otherwise.",
    )
    notes: str | None = Field(default=None, description="Free text.")
    registers: list[RegisterSpec] = Field(min_length=1, description="The registers read.")

    @model_validator(mode="after")
    def _registers(self) -> Self:
        if not MAP_NAME.match(self.name):
            raise ValueError(f"name {self.name!r}: lowercase letters, digits and _ only")
        seen: dict[str, int] = {}
        named: list[tuple[str, ResolvedRegister]] = []
        for i, reg in enumerate(self.registers):
            if reg.signal in seen:
                raise ValueError(
                    f"registers[{i}]: signal {reg.signal!r} is already read by "
                    f"registers[{seen[reg.signal]}]; one signal once per map"
                )
            seen[reg.signal] = i
            try:
                named.append((f"registers[{i}]", reg.resolved(self.defaults)))
            except ValueError as err:
                raise ValueError(f"registers[{i}]: {err}") from None
        clash = overlap(named)
        if clash:
            raise ValueError(clash)
        return self

    def resolved(self) -> list[ResolvedRegister]:
        """The registers with the map's defaults applied."""
        return [reg.resolved(self.defaults) for reg in self.registers]


def bundled_maps() -> dict[str, Path]:
    """The maps shipped with the gateway: name -> file."""
    if not MAPS_DIR.is_dir():
        return {}
    return {p.stem: p for p in sorted(MAPS_DIR.glob("*.yaml"))}


def is_map_path(name_or_path: str) -> bool:
    """A path to a map file (has a folder or a .yaml/.yml suffix), not a bundled name."""
    return "/" in name_or_path or "\\" in name_or_path or name_or_path.endswith((".yaml", ".yml"))


def map_file(name_or_path: str, base: Path | None = None) -> Path:
    """The file behind ``meter:``: a bundled map's, or the path (relative to ``base``)."""
    if is_map_path(name_or_path):
        path = Path(name_or_path).expanduser()
        if not path.is_absolute() and base is not None:
            path = base / path
        return path
    maps = bundled_maps()
    if name_or_path not in maps:
        known = ", ".join(maps) or "none installed"
        raise MapError(
            f"unknown meter map {name_or_path!r} (bundled maps: {known}; or give the path "
            "of your own map file, e.g. ./maps/my_meter.yaml)"
        )
    return maps[name_or_path]


def _error_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out


def load_map(name_or_path: str | Path, base: Path | None = None) -> MeterMap:
    """Load and validate a map: a bundled name or a file path; MapError says what and where."""
    path = map_file(str(name_or_path), base)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise MapError(f"map file {path}: cannot read it ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise MapError(f"map file {path}:{where} not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise MapError(f"map file {path}: expected a mapping with name, source and registers")
    try:
        meter = MeterMap.model_validate(data)
    except ValidationError as err:
        problems = []
        for e in err.errors(include_url=False):
            where = _error_path(tuple(e["loc"]))
            msg = str(e["msg"]).removeprefix("Value error, ")
            if e["type"] == "extra_forbidden":
                msg = "unknown field (check its spelling and indentation)"
            problems.append(f"{where}: {msg}" if where else msg)
        raise MapError(f"map file {path}: " + "; ".join(problems)) from None
    if not is_map_path(str(name_or_path)) and meter.name != path.stem:
        raise MapError(f"map file {path}: name {meter.name!r} is not the file's stem")
    return meter
