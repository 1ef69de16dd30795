"""What a browse found, shown to a person: the printed tree and the site config it writes.

The config is the product of ``opcua browse``: complete (site, one machine, one adapter),
commented so an integrator sees why each entry looks the way it does (skipped types, units
left out, enumerations, companion mappings), and accepted by ``config check`` unchanged.
This module owns the layout and the YAML quoting; what each node is called comes from
:mod:`.proposals`, what the server holds from :mod:`.browse`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asyncua import ua

from ...units import UnitError, check_unit
from .browse import BrowsedNode, BrowseResult
from .config import OpcUaAdapterConfig
from .datatypes import INTEGER_TYPES
from .proposals import propose_signal, slug

if TYPE_CHECKING:
    from .companion import CompanionNode

PASSWORD_ENV = "MICROFACTORY_OPCUA_PASSWORD"

# Vocabulary signals a companion mapping may give: a node of the server's own found for the
# same signal is written commented out, so the config maps each of them once.
COMPANION_SIGNALS = frozenset({"state", "part_count", "good_count", "scrap_count", "program"})
_MAX_ELEMENTS = 16  # longer arrays get `index: 0` rather than a wall of element signals


# --------------------------------------------------------------------------- the tree
def _show(value: Any, limit: int = 40) -> str:
    if isinstance(value, ua.LocalizedText):
        value = value.Text
    elif isinstance(value, ua.QualifiedName):
        value = value.Name
    elif isinstance(value, datetime):
        value = value.isoformat()
    elif isinstance(value, list):
        shown = ", ".join(_show(v, 12) for v in value[:6])
        return f"[{shown}{', …' if len(value) > 6 else ''}]"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_tree(nodes: Sequence[BrowsedNode]) -> list[str]:
    """One line per node: indentation, BrowseName, node id, data type, value, unit."""
    lines = []
    for n in nodes:
        indent = "  " * (n.depth - 1)
        if n.node_class == "Object":
            lines.append(f"{indent}{n.browse_name}  {n.node}  Object{'  …' if n.more else ''}")
            continue
        dtype = n.data_type + (f"[{n.array_length}]" if n.array_length is not None else "")
        if not n.readable:
            tail = "(not readable)"
        elif n.status != "Good" and n.value is None:
            tail = n.status
        else:
            tail = f"= {_show(n.value)}" + (f" {n.unit}" if n.unit else "")
            tail += f"  ({n.status})" if n.status != "Good" else ""
        if n.enum:
            tail += "  enumeration"
        lines.append(f"{indent}{n.browse_name}  {n.node}  {dtype} {tail}")
    return lines


# --------------------------------------------------------------------------- the config
# Browse names that say nothing without their parent (Machinery's CurrentState, Name).
_GENERIC = {"current_state", "name", "value", "id", "number", "current_value"}
_PLAIN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
_YAML_WORDS = {"yes", "no", "on", "off", "true", "false", "null", "y", "n", "~"}


def q(text: str) -> str:
    """A YAML scalar for ``text``: plain when unambiguous, else a JSON (= YAML) string."""
    if _PLAIN.match(text) and text.lower() not in _YAML_WORDS:
        return text
    return json.dumps(text)


def machine_id_from(application_name: str) -> str:
    """A machine id (lowercase, digits, ``-``) from the server's application name."""
    text = re.sub(r"[^a-z0-9_.-]+", "-", application_name.lower()).strip("-._")
    return (text or "machine")[:64]


def _flow(pairs: Sequence[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{k}: {v}" for k, v in pairs) + "}"


def _value_map(value_map: dict[int | str, str]) -> str:
    return _flow(
        [(str(k) if isinstance(k, int) else q(k), q(word)) for k, word in value_map.items()]
    )


@dataclass(slots=True)
class _Names:
    """Signal names already used in this adapter, so a repeated one gets ``_2``, ``_3``…"""

    used: set[str] = field(default_factory=set)

    def take(self, name: str) -> str:
        if name not in self.used:
            self.used.add(name)
            return name
        n = 2
        while f"{name}_{n}" in self.used:
            n += 1
        self.used.add(f"{name}_{n}")
        return f"{name}_{n}"


def _elements(signal: str, length: int) -> list[str]:
    if signal == "voltage" and length == 3:
        return [f"voltage_l{i}" for i in (1, 2, 3)]
    if signal == "power_active" and length == 3:
        return [f"power_l{i}" for i in (1, 2, 3)]
    return [f"{signal}_{i}" for i in range(length)]


def node_entries(nodes: Sequence[BrowsedNode], companion: Sequence[CompanionNode]) -> list[str]:
    """The ``nodes:`` list of the adapter, as YAML lines indented for it, comments included.

    Companion mappings come first and win their node; a vocabulary signal they give is not
    given twice: another node proposed for it is written as a commented-out entry.
    """
    lines: list[str] = []
    names = _Names()
    mapped: set[str] = set()
    given = {c.signal for c in companion if c.signal in COMPANION_SIGNALS}
    for c in companion:
        if c.node in mapped:
            continue
        mapped.add(c.node)
        signal = names.take(c.signal)
        lines.append(f"# {c.spec}: {c.browse_path}")
        pairs = [("node", q(c.node)), ("signal", q(signal))]
        if c.value_map:
            pairs.append(("value_map", _value_map(c.value_map)))
        lines.append(f"- {_flow(pairs)}")
    for n in nodes:
        if n.node_class != "Variable" or n.node in mapped:
            continue
        what = f"{n.browse_path}: {n.data_type}" + (
            f"[{n.array_length}]" if n.array_length is not None else ""
        )
        if not n.readable:
            lines.append(f"# skipped {n.browse_path}: not readable")
            continue
        if not n.storable:
            lines.append(f"# skipped {what}: the gateway stores numbers, text, Boolean, DateTime")
            continue
        mapped.add(n.node)
        lines.append(
            f"# {what} = {_show(n.value)}" + (f" ({n.status})" if n.status != "Good" else "")
        )
        if n.unit_unknown:
            lines.append(f"#   unit {n.unit_unknown}: not a unit the gateway knows; left out")
        if n.enum:
            lines.append(
                "#   enumeration: the adapter reads its EnumStrings/EnumValues; add a value_map"
                " to store other words"
            )
        base = propose_signal(n.browse_name, n.unit, n.base_type, enum=n.enum)
        if (
            base != "state"
            and n.base_type in INTEGER_TYPES
            and slug(n.browse_name).startswith(("state", "status"))
        ):
            lines.append(
                "#   integer codes: to store them as `state`, name the signal state and add"
                " this machine's value_map, e.g. {0: off, 1: idle, 2: running, 3: fault}"
            )
        parent = n.browse_path.rsplit("/", 2)[-2] if "/" in n.browse_path else ""
        if base in _GENERIC and parent:
            base = f"{slug(parent)}_{base}"  # ActiveProgram/Name: active_program_name
        unit = n.unit
        pairs = [("node", q(n.node))]
        shadowed = False
        if n.array_length is not None and 0 < n.array_length <= _MAX_ELEMENTS:
            elements = [names.take(e) for e in _elements(base, n.array_length)]
            if unit is not None and any(_unit_refused(e, unit) for e in elements):
                lines.append(f"#   unit {unit} does not fit {base}; left out")
                unit = None
            pairs.append(("elements", "[" + ", ".join(q(e) for e in elements) + "]"))
        else:
            shadowed = base in given  # the companion mapping is the one the config uses
            signal = base if shadowed else names.take(base)
            if unit is not None and _unit_refused(signal, unit):
                lines.append(f"#   unit {unit} does not fit {signal}; left out")
                unit = None
            pairs.append(("signal", q(signal)))
            if n.array_length is not None:
                lines.append(f"#   {n.array_length} elements: the first is read; change index")
                pairs.append(("index", "0"))
        if unit is not None:
            pairs.append(("unit", q(unit)))
        if shadowed:
            lines.append(f"# - {_flow(pairs)}  # also found; the companion mapping above is used")
        else:
            lines.append(f"- {_flow(pairs)}")
    return lines


def _unit_refused(signal: str, unit: str) -> bool:
    try:
        check_unit(signal, unit)
    except UnitError:
        return True
    return False


def _rel(path: Path, base: Path) -> str:
    """``path`` as the config writes it: relative to the config file's folder when possible."""
    try:
        return os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # another drive (Windows)
        return str(path.resolve())


def build_site_config(
    result: BrowseResult,
    cfg: OpcUaAdapterConfig,
    *,
    out: Path,
    machine: str,
    site: str = "workshop",
    trust_dir: Path | None = None,
    certificate: tuple[Path, Path] | None = None,
    password_given: bool = False,
) -> str:
    """The whole site config (site, one machine, one adapter) as commented YAML text.

    ``cfg`` is the configuration the browse connected with: its security settings are
    written as they were used, the password never (``password_env`` names where it is).
    Paths are written relative to ``out``'s folder, where ``config check`` resolves them.
    """
    base = out.parent
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# Written by `microfactory opcua browse` on {now} from {result.endpoint}",
        f"# Server: {result.application_name} ({result.application_uri})",
        "# Check the proposed signal names and units, delete the nodes you do not need, then",
        f"#   microfactory config check {out.name}",
    ]
    if result.truncated:
        lines.append(
            "# The walk stopped at --max-nodes: nodes past it are missing (raise --max-nodes)."
        )
    lines += [
        f"site: {q(site)}",
        "machines:",
        f"  - id: {q(machine)}",
        f"    name: {json.dumps(result.application_name or machine)}",
        "adapters:",
        "  - type: opcua",
        f"    name: {q(cfg.name)}",
        f"    machine: {q(machine)}",
        f"    endpoint: {json.dumps(cfg.endpoint)}",
        f"    security_policy: {q(cfg.security_policy)}",
        f"    security_mode: {q(cfg.security_mode)}",
    ]
    if cfg.allow_insecure:
        lines.append("    allow_insecure: true  # values cross the network in clear text")
    if cfg.secure:
        if certificate is not None:
            cert, key = certificate
            lines.append(
                f"    certificate: {json.dumps(_rel(cert, base))}  # trusted by the machine"
            )
            lines.append(f"    private_key: {json.dumps(_rel(key, base))}")
        if cfg.application_uri:
            lines.append(f"    application_uri: {json.dumps(cfg.application_uri)}")
        if trust_dir is not None:
            lines.append(
                f"    trust_dir: {json.dumps(_rel(trust_dir, base))}  # holds the server's certificate"
            )
        if cfg.trust_on_first_use:
            lines.append("    trust_on_first_use: true")
    if cfg.username:
        lines.append(f"    username: {json.dumps(cfg.username)}")
        if password_given:
            lines.append(f"    password_env: {PASSWORD_ENV}  # set it in the gateway's environment")
    entries = node_entries(result.nodes, result.companion)
    if not any(line.startswith("- ") for line in entries):
        lines.append("    companion: auto  # no readable variable found; companion objects, if any")
    lines.append(
        "    nodes:" if any(line.startswith("- ") for line in entries) else "    nodes: []"
    )
    lines += [f"      {line}" for line in entries]
    return "\n".join(lines) + "\n"
