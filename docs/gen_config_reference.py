"""Regenerate the reference tables in the docs from the code, so they cannot drift from it.

    .venv/bin/python docs/gen_config_reference.py          # rewrite the generated blocks
    .venv/bin/python docs/gen_config_reference.py --check  # exit 1 if a block is stale

Every ```yaml block of a ``docs/*.md`` whose first line is ``# file: docs/examples/X.yaml`` is
filled with that file, so the examples shown are the examples the tests load. Each table sits
between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``
in ``docs/site-config.md`` or ``docs/wire-contract.md``; everything outside the markers is
written by hand. Types, defaults and limits come from the pydantic models and the contract;
the meaning of each field is its model's ``Field(description=...)``, and a config field
without one fails the run: a new config field is not done until it is explained.
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # run from a checkout without installing

from microfactory import contract  # noqa: E402
from microfactory.gateway import config as gc  # noqa: E402
from microfactory.gateway.adapters.modbus import config as mb  # noqa: E402
from microfactory.gateway.adapters.modbus import maps as mbmaps  # noqa: E402
from microfactory.gateway.adapters.modbus import registers as mbreg  # noqa: E402
from microfactory.gateway.adapters.mqtt import config as mq  # noqa: E402
from microfactory.gateway.adapters.opcua import config as ua  # noqa: E402
from microfactory.gateway.adapters.sparkplug import config as spb  # noqa: E402
from microfactory.mqtt.settings import MqttSettings, TlsSettings  # noqa: E402

# Field meanings of the wire-contract payloads, where the model gives no description.
PAYLOAD_MEANINGS: dict[str, str] = {
    "contract_version": f"Contract version of the sender (now {contract.CONTRACT_VERSION}).",
    "site": "Site id.",
    "machine": "Machine id.",
    "order": "Order the machine works on.",
    "batch": "Batch (lot) the machine works on.",
    "operation": "Operation of the routing being run.",
    "operator": "Operator who started the batch.",
    "product": "Product being made.",
    "state": "New machine state.",
    "previous": "State before.",
    "part_count": "The machine's part counter after this part.",
    "good": "true: good part, false: scrap, null: the machine does not say.",
    "energy_wh": "Energy this part took, in Wh.",
    "cycle_time_s": "Cycle time of this part, in seconds.",
    "start_ns": "UTC ns when data stopped.",
    "reason": "Why, in words.",
    "kind": "Event kind (the discriminator).",
}

_NAMES = {
    "NodeSpec": "node",
    "Subscription": "subscription",
    "TimestampSpec": "timestamp",
    "FieldSpec": "field",
    "ValueSpec": "value",
    "CsvColumn": "column",
    "DeviceSpec": "device",
    "ConfigRegisterSpec": "register",
    "RegisterSpec": "register",
    "RegisterDefaults": "defaults",
    "MetricMapping": "metric",
    "DeviceMapping": "device",
    "AvailabilitySpec": "availability",
    "MachineConfig": "machine",
    "AdapterConfigBase": "adapter",
}


def _type(tp: Any) -> str:
    """A type as a config writer reads it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" if isinstance(a, int) else f'`"{a}"`' for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin is list:
        return f"list of {_type(args[0])}"
    if origin is dict:
        return f"map {_type(args[0])} → {_type(args[1])}"
    if tp is type(None):
        return "null"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _NAMES.get(tp.__name__, "section")
    if isinstance(tp, type) and issubclass(tp, Path):
        return "path"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp)


def _limits(info: FieldInfo) -> str:
    out = []
    for m in info.metadata:
        for attr, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(m, attr, None)
            if value is not None and isinstance(
                m, annotated_types.Ge | annotated_types.Gt | annotated_types.Le | annotated_types.Lt
            ):
                out.append(f"{sign} {value:,}".replace(",", " "))
        if isinstance(m, annotated_types.MinLen):
            out.append(f"at least {m.min_length}")
    return ", ".join(out)


def _default(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(section defaults)"
        return f"`{value!r}`" if value else "`[]`" if isinstance(value, list) else "`{}`"
    if info.default is PydanticUndefined:
        return "**required**"
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, Path):
        return f"`{value}`"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10_000:
        return f"`{value}`"
    return f"`{value}`"


def field_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    missing = []
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        meaning = info.description
        if not meaning:
            missing.append(f"{model.__name__}.{name}")
            continue
        kind = _type(info.annotation)
        limits = _limits(info)
        if limits:
            kind = f"{kind}, {limits}"
        rows.append(f"| `{name}` | {kind} | {_default(info)} | {meaning} |")
    if missing:
        raise SystemExit(
            f"no meaning written for: {', '.join(missing)} "
            "(give each a Field(description=...) on its model)"
        )
    return "\n".join(rows)


def signals_table() -> str:
    rows = ["| signal | unit | kind | meaning |", "|---|---|---|---|"]
    for spec in contract.SIGNALS.values():
        unit = f"`{spec.unit}`" if spec.unit else "—"
        field = "`text`" if spec.kind == "text" else "`value`"
        meaning = spec.description.replace("|", "\\|")
        rows.append(f"| `{spec.name}` | {unit} | {spec.kind} ({field}) | {meaning} |")
    return "\n".join(rows)


def payload_table(model: type[BaseModel]) -> str:
    rows = ["| field | type | required | meaning |", "|---|---|---|---|"]
    for name, info in model.model_fields.items():
        required = "yes" if info.is_required() else f"no (default {_default(info)})"
        meaning = info.description or PAYLOAD_MEANINGS.get(name)
        if not meaning:
            raise SystemExit(
                f"no meaning written for payload field {model.__name__}.{name} "
                "(give it a Field description in microfactory/contract.py)"
            )
        rows.append(f"| `{name}` | {_type(info.annotation)} | {required} | {meaning} |")
    return "\n".join(rows)


def event_tables() -> str:
    union = typing.get_args(contract.MachineEvent)[0]
    parts = []
    for model in typing.get_args(union):
        kind = model.model_fields["kind"].default
        doc = (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        head = f"#### `{kind}` — {model.__name__}\n\n" + (f"{doc}\n\n" if doc else "")
        parts.append(head + payload_table(model))
    return "\n\n".join(parts)


def blocks() -> dict[Path, dict[str, str]]:
    site = DOCS / "site-config.md"
    wire = DOCS / "wire-contract.md"
    return {
        site: {
            "site": field_table(gc.SiteConfig),
            "machines": field_table(gc.MachineConfig),
            "mqtt": field_table(MqttSettings),
            "mqtt_tls": field_table(TlsSettings),
            "influxdb": field_table(gc.InfluxSettings),
            "local_history": field_table(gc.LocalHistorySettings),
            "spool": field_table(gc.SpoolSettings),
            "pipeline": field_table(gc.PipelineSettings),
            "health": field_table(gc.HealthSettings),
            "mes_link": field_table(gc.MesLinkSettings),
            "opcua": field_table(ua.OpcUaAdapterConfig),
            "opcua_node": field_table(ua.NodeSpec),
            "mqtt_adapter": field_table(mq.MqttAdapterConfig),
            "mqtt_subscription": field_table(mq.Subscription),
            "mqtt_timestamp": field_table(mq.TimestampSpec),
            "mqtt_field": field_table(mq.FieldSpec),
            "mqtt_value": field_table(mq.ValueSpec),
            "mqtt_column": field_table(mq.CsvColumn),
            "mqtt_availability": field_table(mq.AvailabilitySpec),
            "modbus": field_table(mb.ModbusAdapterConfig),
            "modbus_device": field_table(mb.DeviceSpec),
            "modbus_register": field_table(mbreg.ConfigRegisterSpec),
            "modbus_map": field_table(mbmaps.MeterMap),
            "modbus_map_defaults": field_table(mbreg.RegisterDefaults),
            "modbus_map_register": field_table(mbreg.RegisterSpec),
            "sparkplug": field_table(spb.SparkplugAdapterConfig),
            "sparkplug_device": field_table(spb.DeviceMapping),
            "sparkplug_metric": field_table(spb.MetricMapping),
        },
        wire: {
            "signals": signals_table(),
            "context": payload_table(contract.MachineContext),
            "events": event_tables(),
        },
    }


_EXAMPLE = re.compile(r"```yaml\n# file: (docs/examples/[\w.-]+\.yaml)\n.*?```", re.DOTALL)


def embed_examples(text: str) -> str:
    """Fill every ```yaml block headed ``# file: docs/examples/X.yaml`` with that file."""

    def fill(m: re.Match[str]) -> str:
        body = (DOCS.parent / m.group(1)).read_text(encoding="utf-8")
        return f"```yaml\n# file: {m.group(1)}\n{body.rstrip()}\n```"

    return _EXAMPLE.sub(fill, text)


def render(text: str, name: str, body: str) -> str:
    begin, end = f"<!-- BEGIN GENERATED: {name} -->", f"<!-- END GENERATED: {name} -->"
    head, sep, rest = text.partition(begin)
    if not sep:
        raise SystemExit(f"marker {begin!r} not found")
    _, sep, tail = rest.partition(end)
    if not sep:
        raise SystemExit(f"marker {end!r} not found")
    return f"{head}{begin}\n{body}\n{end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale blocks")
    args = parser.parse_args(argv)
    stale = []
    generated = blocks()
    for path in sorted(DOCS.glob("*.md")):
        old = path.read_text(encoding="utf-8")
        new = old
        for name, body in generated.get(path, {}).items():
            new = render(new, name, body)
        new = embed_examples(new)
        if new != old:
            stale.append(path.name)
            if not args.check:
                path.write_text(new, encoding="utf-8")
    if args.check and stale:
        sys.stderr.write(
            f"stale generated tables in {', '.join(stale)}: "
            "run .venv/bin/python docs/gen_config_reference.py\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
