"""Site-config model of the Modbus adapter (``type: modbus``).

One adapter is one connection: a Modbus TCP device or gateway (``transport: tcp``), or one
RS-485 bus behind a serial port (``transport: rtu``). On it, one device (``unit_id``,
``machine``, ``meter`` / ``registers`` on the adapter itself) or several (``devices:``).
Everything a map or a register can get wrong is refused here, at ``config check``: an
unknown map, a map file that does not load, overlapping registers, a type that does not fit
the function, a unit that does not convert, one signal of one machine read twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ...sdk import AdapterConfigBase
from .maps import MapError, is_map_path, load_map
from .registers import (
    ConfigRegisterSpec,
    Point,
    RegisterDefaults,
    ResolvedRegister,
    overlap,
)

INLINE_DEFAULTS = RegisterDefaults()
"""Defaults of registers written in the site config: holding, uint16, big-endian words."""

_DEVICE_FIELDS = ("unit_id", "machine", "meter", "registers")


def _base_dir(info: ValidationInfo) -> Path | None:
    context = info.context
    if isinstance(context, dict) and context.get("base_dir") is not None:
        return Path(context["base_dir"])
    return None


def _deferred(meter: str, base: Path | None) -> bool:
    """A relative map path seen before the config file's folder is known: load it later."""
    return is_map_path(meter) and not Path(meter).expanduser().is_absolute() and base is None


def _check_meter(meter: str | None, info: ValidationInfo) -> str | None:
    if meter is None:
        return None
    base = _base_dir(info)
    if not _deferred(meter, base):
        try:
            load_map(meter, base)
        except MapError as err:
            raise ValueError(str(err)) from None
    return meter


def _check_registers(
    registers: list[ConfigRegisterSpec], info: ValidationInfo
) -> list[ConfigRegisterSpec]:
    """Registers of one device: each has a machine, none overlaps another or the map's."""
    machine = info.data.get("machine")
    meter = info.data.get("meter")
    named: list[tuple[str, ResolvedRegister]] = []
    if meter is not None and not _deferred(meter, _base_dir(info)):
        meter_map = load_map(meter, _base_dir(info))
        named = [(f"meter {meter_map.name}'s {r.signal}", r) for r in meter_map.resolved()]
    for i, reg in enumerate(registers):
        if reg.machine is None and machine is None:
            raise ValueError(
                f"registers[{i}] ({reg.signal}): no machine; set `machine` on the device or "
                "on the register"
            )
        named.append((f"registers[{i}]", reg.resolved(INLINE_DEFAULTS)))
    clash = overlap(named)
    if clash:
        raise ValueError(clash)
    return registers


class _Device(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unit_id: int = Field(
        default=1,
        ge=0,
        le=255,
        description=(
            "Modbus unit id (slave address) of the device: 1-247 on a bus; a TCP device "
            "often answers to any, a TCP-to-RS-485 gateway routes by it."
        ),
    )
    machine: str | None = Field(
        default=None,
        description=(
            "The machine the device measures (declared under `machines`): its samples "
            "carry this machine id."
        ),
    )
    meter: str | None = Field(
        default=None,
        description=(
            "A bundled meter map by name (`eastron_sdm630`...) or the path of your own map "
            "file (relative to the config file)."
        ),
    )
    registers: list[ConfigRegisterSpec] = Field(
        default_factory=list,
        description=(
            "Registers read besides (or instead of) the map's; defaults: `function: "
            "holding`, `type: uint16`, big-endian words and bytes."
        ),
    )


class DeviceSpec(_Device):
    """One device (unit id) on the adapter's connection."""

    @field_validator("meter")
    @classmethod
    def _meter(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_meter(v, info)

    @field_validator("registers")
    @classmethod
    def _registers(
        cls, v: list[ConfigRegisterSpec], info: ValidationInfo
    ) -> list[ConfigRegisterSpec]:
        return _check_registers(v, info)

    @model_validator(mode="after")
    def _something(self) -> Self:
        if self.meter is None and not self.registers:
            raise ValueError(f"unit {self.unit_id}: give a `meter` or `registers` (or both)")
        if self.machine is None and not self.registers:
            raise ValueError(f"unit {self.unit_id}: give the `machine` the meter measures")
        return self


class ModbusAdapterConfig(AdapterConfigBase):
    type: Literal["modbus"] = Field(default="modbus", description="`modbus`.")
    name: str = Field(
        description="Adapter name, unique in the file; used in logs, dead letters and health."
    )
    transport: Literal["tcp", "rtu"] = Field(
        default="tcp",
        description="`tcp`: Modbus TCP (`host`, `port`). `rtu`: Modbus RTU on a serial port.",
    )
    host: str | None = Field(
        default=None,
        validate_default=True,
        description="Host name or IP address of the Modbus TCP device or gateway (`tcp`).",
    )
    port: int = Field(default=502, ge=1, le=65535, description="TCP port (`tcp`).")
    serial_port: str | None = Field(
        default=None,
        validate_default=True,
        description=(
            "Serial device of the RS-485 adapter (`rtu`), e.g. `/dev/ttyUSB0`; prefer the "
            "stable `/dev/serial/by-id/...` name."
        ),
    )
    baudrate: int = Field(default=9600, gt=0, description="Serial speed in bit/s (`rtu`).")
    parity: Literal["N", "E", "O"] = Field(
        default="N", description="Serial parity: `N` none, `E` even, `O` odd (`rtu`)."
    )
    stopbits: Literal[1, 2] = Field(default=1, description="Serial stop bits (`rtu`).")
    bytesize: Literal[7, 8] = Field(default=8, description="Serial data bits (`rtu`).")
    timeout_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description=(
            "How long to wait for a connection or an answer; a device that does not answer "
            "within it is skipped until its next poll."
        ),
    )
    poll_interval_ms: int = Field(
        default=1000, ge=50, description="Poll interval of registers that do not set their own."
    )
    max_gap_registers: int = Field(
        default=8,
        ge=0,
        le=124,
        description=(
            "Registers (or bits) not mapped that one read may span to join two mapped ones; "
            "`0`: read only contiguous registers together."
        ),
    )
    max_registers_per_read: int = Field(
        default=125,
        ge=1,
        le=125,
        description="Most registers one read asks for (the protocol allows 125; some devices fewer).",
    )
    max_bits_per_read: int = Field(
        default=2000,
        ge=1,
        le=2000,
        description="Most coils or discrete inputs one read asks for (the protocol allows 2000).",
    )
    retry_failed_s: float = Field(
        default=60.0,
        ge=1,
        description=(
            "A register the device refuses (exception code) is read again, alone, this often "
            "until it answers."
        ),
    )
    stale_after_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "A device silent this long is shown stale and its silence recorded as a gap; "
            "unset: three of its poll intervals plus `timeout_s`, at least 5 s."
        ),
    )
    reconnect_max_s: float = Field(
        default=10.0,
        ge=1,
        le=600,
        description="Longest pause between reconnect attempts (the pause doubles from 0.5 s).",
    )
    unit_id: int = Field(
        default=1,
        ge=0,
        le=255,
        description="Unit id of the one device on the adapter (without `devices`).",
    )
    machine: str | None = Field(
        default=None,
        description="The machine the one device measures (without `devices`).",
    )
    meter: str | None = Field(
        default=None,
        description=(
            "Map of the one device (without `devices`): a bundled name (`eastron_sdm630`...) "
            "or the path of your own map file, relative to the config file."
        ),
    )
    registers: list[ConfigRegisterSpec] = Field(
        default_factory=list,
        description=(
            "Registers of the one device besides (or instead of) the map's (without "
            "`devices`); defaults: `function: holding`, `type: uint16`, big-endian."
        ),
    )
    devices: list[DeviceSpec] = Field(
        default_factory=list,
        description=(
            "Several devices on this connection (an RS-485 bus, a TCP gateway), each with "
            "`unit_id`, `machine`, `meter` and/or `registers`; excludes the single-device fields."
        ),
    )

    _base: Path | None = PrivateAttr(default=None)  # folder of relative map paths, if known

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None, info: ValidationInfo) -> str | None:
        transport = info.data.get("transport", "tcp")
        if transport == "tcp" and not v:
            raise ValueError("transport tcp needs the `host` of the Modbus TCP device")
        if transport == "rtu" and v:
            raise ValueError("`host` is for transport tcp; an rtu bus uses `serial_port`")
        return v

    @field_validator("serial_port")
    @classmethod
    def _serial_port(cls, v: str | None, info: ValidationInfo) -> str | None:
        transport = info.data.get("transport", "tcp")
        if transport == "rtu" and not v:
            raise ValueError("transport rtu needs a `serial_port`, e.g. /dev/ttyUSB0")
        if transport == "tcp" and v:
            raise ValueError("`serial_port` is for transport rtu (or remove it)")
        return v

    @field_validator("meter")
    @classmethod
    def _meter(cls, v: str | None, info: ValidationInfo) -> str | None:
        return _check_meter(v, info)

    @field_validator("registers")
    @classmethod
    def _registers(
        cls, v: list[ConfigRegisterSpec], info: ValidationInfo
    ) -> list[ConfigRegisterSpec]:
        return _check_registers(v, info)

    @model_validator(mode="after")
    def _devices(self, info: ValidationInfo) -> Self:
        self._base = _base_dir(info)
        if self.devices:
            given = [f for f in _DEVICE_FIELDS if f in self.model_fields_set]
            if given:
                raise ValueError(
                    f"{', '.join(given)} and `devices` exclude each other: put every device "
                    "under `devices`"
                )
            units: dict[int, int] = {}
            for i, dev in enumerate(self.devices):
                if dev.unit_id in units:
                    raise ValueError(
                        f"devices[{i}]: unit id {dev.unit_id} is already devices[{units[dev.unit_id]}]"
                    )
                units[dev.unit_id] = i
        else:
            if self.meter is None and not self.registers:
                raise ValueError("give a `meter` or `registers` (or `devices`)")
            if self.machine is None and not self.registers:
                raise ValueError("give the `machine` the meter measures")
        seen: dict[tuple[str, str], str] = {}
        for where, point in self._named_points():
            key = (point.machine, point.signal)
            if key in seen:
                raise ValueError(
                    f"{where}: machine {point.machine!r} signal {point.signal!r} is already "
                    f"read by {seen[key]}; one source per signal"
                )
            seen[key] = where
        return self

    # ------------------------------------------------------------------ for the adapter
    def device_list(self) -> list[DeviceSpec]:
        """The devices on this connection (the single-device fields make one)."""
        if self.devices:
            return list(self.devices)
        return [
            DeviceSpec.model_construct(
                unit_id=self.unit_id,
                machine=self.machine,
                meter=self.meter,
                registers=list(self.registers),
            )
        ]

    def _named_points(self) -> list[tuple[str, Point]]:
        base = self._base
        out: list[tuple[str, Point]] = []
        prefix_all = bool(self.devices)
        for d, dev in enumerate(self.device_list()):
            prefix = f"devices[{d}]." if prefix_all else ""
            if dev.meter is not None and not _deferred(dev.meter, base):
                meter_map = load_map(dev.meter, base)
                for reg in meter_map.resolved():
                    out.append(
                        (
                            f"{prefix}meter {meter_map.name} ({reg.signal})",
                            Point.of(
                                reg,
                                unit_id=dev.unit_id,
                                machine=dev.machine or "",
                                poll_interval_ms=self.poll_interval_ms,
                            ),
                        )
                    )
            for i, spec in enumerate(dev.registers):
                out.append(
                    (
                        f"{prefix}registers[{i}]",
                        Point.of(
                            spec.resolved(INLINE_DEFAULTS),
                            unit_id=dev.unit_id,
                            machine=spec.machine or dev.machine or "",
                            poll_interval_ms=self.poll_interval_ms,
                        ),
                    )
                )
        return out

    def points(self) -> list[Point]:
        """Every register of every device, defaults applied (map paths must be absolute)."""
        return [point for _, point in self._named_points()]

    def machines_referenced(self) -> set[str]:
        out = {dev.machine for dev in self.device_list() if dev.machine}
        out |= {reg.machine for dev in self.device_list() for reg in dev.registers if reg.machine}
        return out

    def signals_referenced(self) -> set[tuple[str, str]]:
        return {(p.machine, p.signal) for p in self.points()}

    def device_stale_after_s(self, points: list[Point]) -> float:
        """How long one device may stay silent before it is shown stale."""
        if self.stale_after_s is not None:
            return self.stale_after_s
        slowest = max((p.poll_interval_ms for p in points), default=self.poll_interval_ms)
        return max(5.0, 3 * slowest / 1000 + self.timeout_s)

    def with_base_dir(self, base: Path) -> Self:
        """Relative map paths are taken from the config file's folder, and loaded now."""
        data = self.model_dump(exclude_unset=True)
        changed = False

        def absolute(section: dict[str, Any]) -> None:
            nonlocal changed
            meter = section.get("meter")
            if isinstance(meter, str) and is_map_path(meter):
                path = Path(meter).expanduser()
                if not path.is_absolute():
                    section["meter"] = str(base / path)
                    changed = True

        absolute(data)
        for device in data.get("devices", []):
            absolute(device)
        if not changed:
            return self
        return type(self).model_validate(data, context={"base_dir": base})
