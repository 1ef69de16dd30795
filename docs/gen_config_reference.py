"""Regenerate the reference tables in the docs from the code, so they cannot drift from it.

    .venv/bin/python docs/gen_config_reference.py          # rewrite the generated blocks
    .venv/bin/python docs/gen_config_reference.py --check  # exit 1 if a block is stale

Every ```yaml block of a ``docs/*.md`` whose first line is ``# file: docs/examples/X.yaml`` is
filled with that file, so the examples shown are the examples the tests load. Each table sits
between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``
in ``docs/site-config.md`` or ``docs/wire-contract.md``; everything outside the markers is
written by hand. Types, defaults and limits come from the pydantic models and the contract;
the meaning of each field comes from ``MEANINGS`` below (or the field's own ``description``),
and a field with neither fails the run: a new config field is not done until it is explained.
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
from microfactory.gateway.adapters.mqtt import config as mq  # noqa: E402
from microfactory.gateway.adapters.opcua import config as ua  # noqa: E402
from microfactory.mqtt.settings import MqttSettings  # noqa: E402

# The meaning of a field, by "Model.field", where the model's own description is not enough.
MEANINGS: dict[str, str] = {
    # top level
    "SiteConfig.site": "Site id: the `site` tag on every point and a level of the MES topics. "
    "Lowercase letters, digits, `-`, `_`, `.`.",
    "SiteConfig.machines": "The machines of the workshop (at least one). Adapters may only "
    "produce samples for machines declared here.",
    "SiteConfig.adapters": "Connections to machines; each entry's `type` picks the adapter "
    "(`opcua`, `mqtt`, or any installed through the `microfactory.adapters` entry point).",
    "SiteConfig.mqtt": "The shared broker. Filled with the defaults when an `mqtt` adapter or "
    "`mes_link:` needs a broker and the section is absent.",
    "SiteConfig.influxdb": "Where telemetry goes. Absent: the local history is the only store.",
    "SiteConfig.local_history": "The embedded SQLite history.",
    "SiteConfig.spool": "The on-disk store-and-forward buffer between pipeline and sinks.",
    "SiteConfig.pipeline": "Validation limits of the normalisation stage.",
    "SiteConfig.health": "Health endpoint settings (see the note under *health*).",
    "SiteConfig.mes_link": "The MES link. Absent: no context tags, no machine events.",
    # machines
    "MachineConfig.id": "Machine id: the `machine` tag in InfluxDB and an MQTT topic level. "
    "Lowercase letters, digits, `-`, `_`, `.`, at most 64 characters; unique.",
    "MachineConfig.kind": "What the machine is (`cnc_mill`, `laser_cutter`, …); free text, "
    "for people and dashboards.",
    "MachineConfig.name": "Display name.",
    "MachineConfig.nominal_power_w": "Rated power in W, for people and dashboards.",
    # mqtt
    "MqttSettings.url": "`mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (TLS, 8883).",
    "MqttSettings.client_id": "Base client id; each MQTT adapter connects as "
    "`<client_id>-<adapter name>`, the MES link as `<client_id>-mes`. Keep it stable: the "
    "broker keeps persistent sessions by client id.",
    "MqttSettings.username": "Broker user (used by adapters without their own `broker`).",
    "MqttSettings.password": "Broker password; prefer `MICROFACTORY_MQTT__PASSWORD`.",
    "MqttSettings.keepalive_s": "MQTT keep-alive of the MES link's connection, in seconds "
    "(the MQTT adapters use 30 s).",
    # influxdb
    "InfluxSettings.api": "`v1`: InfluxDB 1.x `/write` (Debian's `influxdb`). `v2`: InfluxDB "
    "2.x/3.x or anything serving `/api/v2/write`, through influxdb-client.",
    "InfluxSettings.url": "Base URL, `http://HOST:PORT` or `https://…` (trailing `/` removed).",
    "InfluxSettings.database": "v1: database to write to (required; created at start if missing).",
    "InfluxSettings.retention_policy": "v1: retention policy (`rp`); none: the database's default.",
    "InfluxSettings.username": "v1: user, when authentication is on.",
    "InfluxSettings.password": "v1: password; prefer `MICROFACTORY_INFLUXDB__PASSWORD`.",
    "InfluxSettings.org": "v2: organisation (required).",
    "InfluxSettings.bucket": "v2: bucket (required).",
    "InfluxSettings.token": "v2: API token; prefer `MICROFACTORY_INFLUXDB__TOKEN`.",
    "InfluxSettings.batch_size": "Most points per write request.",
    "InfluxSettings.timeout_s": "HTTP timeout of one write, in seconds.",
    # local history
    "LocalHistorySettings.enabled": "`true`/`false` forces it on or off; unset: on exactly "
    "when there is no `influxdb:`.",
    "LocalHistorySettings.path": "SQLite file (directories are created).",
    "LocalHistorySettings.retention_days": "Points older than this are deleted (checked hourly).",
    # spool
    "SpoolSettings.path": "SQLite file of the spool (WAL mode; directories are created). "
    "Dead letters and quarantined points are kept in it too.",
    "SpoolSettings.max_bytes": "Disk quota (default 1 GiB, at least 1 MiB).",
    "SpoolSettings.max_age_s": "Samples spooled longer ago than this are dropped and counted "
    "(default 7 days).",
    "SpoolSettings.overflow": "At the quota: `drop_oldest` deletes the oldest tenth and counts "
    "it per sink; `stop_accepting` refuses new samples and counts them as refused.",
    "SpoolSettings.durability": "`full`: a committed sample survives a power cut (SQLite "
    "`synchronous=FULL`). `normal`: survives a crash of the gateway, may lose the last "
    "commits on power loss, and costs less flash wear.",
    "SpoolSettings.commit_interval_ms": "Accepted but not used yet (the pipeline commits "
    "whatever has arrived as soon as the previous commit is done).",
    # pipeline
    "PipelineSettings.min_timestamp_ns": "Samples stamped before this (UTC ns; default "
    "2000-01-01) are dead-lettered: a machine clock that was never set.",
    "PipelineSettings.max_future_s": "Samples stamped more than this many seconds ahead of "
    "the gateway's clock are dead-lettered.",
    "PipelineSettings.max_text_length": "Longest accepted text value (`state`, `program`), in "
    "characters.",
    # health
    "HealthSettings.host": "Address for the health endpoint.",
    "HealthSettings.port": "Port for the health endpoint (0: any free port).",
    "HealthSettings.enabled": "Serve the health endpoint.",
    # mes link
    "MesLinkSettings.events": "Publish machine events (state changes, parts, gaps) for the "
    "MES. `false`: only subscribe to the context and tag samples with it.",
    "MesLinkSettings.client_id": "Client id of the MES link's persistent session; unset: "
    "`<mqtt.client_id>-mes`.",
    "MesLinkSettings.protocol": "MQTT version of the persistent session: `3.1.1` (clean "
    "session off; every broker) or `5` (session expiry below).",
    "MesLinkSettings.session_expiry_s": "MQTT 5 only: how long the broker keeps the session "
    "(and queued context) while the gateway is away.",
    "MesLinkSettings.publish_timeout_s": "How long to wait for the broker's PUBACKs of a "
    "batch of events before retrying it.",
    "MesLinkSettings.connect_wait_s": "At start, wait this long for the retained contexts so "
    "the first samples are already tagged.",
    "MesLinkSettings.hold_s": "A part is held until its energy and good/scrap counters have "
    "been seen, or the machine's data has moved on by this many seconds.",
    "MesLinkSettings.batch_size": "Most spooled samples turned into events at once.",
    "MesLinkSettings.state_path": "Where the event deriver's memory (last counters per "
    "machine) is saved after each batch; default `mes-events-state.json` next to the spool.",
    # opcua
    "OpcUaAdapterConfig.type": "`opcua`.",
    "OpcUaAdapterConfig.name": "Adapter name, unique in the file; used in logs, dead letters "
    "and the health counters.",
    "OpcUaAdapterConfig.machine": "The machine (declared under `machines`) all nodes belong to.",
    "OpcUaAdapterConfig.endpoint": "`opc.tcp://HOST:PORT[/path]`.",
    "OpcUaAdapterConfig.publishing_interval_ms": "Publishing interval of the one subscription "
    "per session.",
    "OpcUaAdapterConfig.timeout_s": "Timeout of connecting and of every read; a read that "
    "times out ends the session and starts a reconnect.",
    "OpcUaAdapterConfig.reconnect_max_s": "Longest pause between reconnect attempts (the "
    "pause doubles from 0.5 s).",
    "OpcUaAdapterConfig.watchdog_s": "How often the session is probed (reads the server "
    "state): a blackholed network is noticed within `watchdog_s + timeout_s`.",
    "OpcUaAdapterConfig.nodes": "The nodes to read (at least one).",
    "OpcUaAdapterConfig.namespace_uri": "Namespace URI of node ids written without `nsu=`; "
    "unset: namespace 0. Resolved to an index at every connect (indexes may change).",
    "OpcUaAdapterConfig.queue_size": "Server-side queue per monitored item: data changes kept "
    "between two publishes.",
    "NodeSpec.node": "`nsu=<namespace URI>;s=Name`, or `s=Name` / `i=123` / `g=…` / `b=…` in "
    "the adapter's `namespace_uri`. `ns=<index>` is refused.",
    "NodeSpec.signal": "Signal name: from the vocabulary (see the wire contract) or your own.",
    "NodeSpec.unit": "Unit the server reports in; converted to the signal's canonical unit. "
    "Checked at load time. Unset: already canonical.",
    "NodeSpec.scale": "Multiply numeric values (before unit conversion).",
    "NodeSpec.offset": "Add to numeric values after `scale`.",
    "NodeSpec.mode": "`subscribe`: monitored item (data changes). `poll`: read every "
    "`poll_interval_ms`.",
    "NodeSpec.sampling_interval_ms": "Server-side sampling interval of the monitored item.",
    "NodeSpec.poll_interval_ms": "Read interval for `mode: poll`.",
    # mqtt adapter
    "MqttAdapterConfig.type": "`mqtt`.",
    "MqttAdapterConfig.name": "Adapter name, unique in the file; part of the client id.",
    "MqttAdapterConfig.broker": "This adapter's own broker URL; unset: the site's `mqtt.url` "
    "(`mqtt.username`/`password` are only used with the site's broker).",
    "MqttAdapterConfig.max_payload_bytes": "Larger messages are dead-lettered unread.",
    "MqttAdapterConfig.subscriptions": "Topic filters and how to read their payloads (at "
    "least one).",
    "MqttAdapterConfig.client_id": "Client id; unset: `<mqtt.client_id>-<name>`. Keep it "
    "stable, the broker keys the persistent session on it.",
    "MqttAdapterConfig.persistent_session": "Connect with clean session off, so the broker "
    "keeps QoS 1 messages while the gateway is away (up to its queue limit).",
    "Subscription.topic": "MQTT topic filter with `+`/`#` wildcards; a whole level may be "
    "`{machine}` or `{signal}`, which matches like `+` and captures the level.",
    "Subscription.signals": "Rename captured `{signal}` levels, e.g. `energy_total: "
    "energy_active`; levels not listed are used as they are.",
    "FieldSpec.path": "Dotted path into the JSON object, e.g. `power.value`; digits index "
    "arrays (`phases.0`). A missing field is skipped.",
    "FieldSpec.unit_path": "Path of a unit given in the payload; wins over `unit` when present "
    "and text (checked per message: an unconvertible unit is dead-lettered).",
    "Subscription.machine": "Machine of every message on this topic; or use a `{machine}` "
    "level (exactly one of the two).",
    "Subscription.signal": "For `value` subscriptions: the signal; or use a `{signal}` level "
    "(exactly one of the two).",
    "Subscription.qos": "Subscription QoS. With 1 or 2 the PUBACK is sent only once the "
    "samples are in the spool.",
    "Subscription.format": "Payload format; only `json` today.",
    "Subscription.timestamp": "Where the source time is.",
    "Subscription.fields": "Object payload: one entry per JSON field to read.",
    "Subscription.value": "One value per message (exclusive with `fields`).",
    "TimestampSpec.path": "Dotted path of the time in the payload; unset: receive time.",
    "TimestampSpec.format": "`epoch_s`/`_ms`/`_us`/`_ns` numbers, `iso8601` text with a time "
    "zone, or `auto` (numbers by magnitude, text as ISO 8601).",
    "FieldSpec.signal": "Signal name.",
    "FieldSpec.unit": "Unit of the value, converted to the signal's canonical unit (checked at "
    "load time).",
    "FieldSpec.scale": "Multiply numeric values (before unit conversion).",
    "FieldSpec.offset": "Add to numeric values after `scale`.",
    "ValueSpec.path": "Dotted path of the value; `null`: the whole payload is the value "
    "(then the receive time is used).",
    "ValueSpec.unit": "Unit when the payload gives none.",
    "ValueSpec.unit_path": "Path of a unit in the payload; wins over `unit` when present and text.",
    "ValueSpec.scale": "Multiply numeric values (before unit conversion).",
    "ValueSpec.offset": "Add to numeric values after `scale`.",
}

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
        key = f"{model.__name__}.{name}"
        meaning = MEANINGS.get(key) or info.description
        if not meaning:
            missing.append(key)
            continue
        kind = _type(info.annotation)
        limits = _limits(info)
        if limits:
            kind = f"{kind}, {limits}"
        rows.append(f"| `{name}` | {kind} | {_default(info)} | {meaning} |")
    if missing:
        raise SystemExit(f"no meaning written for: {', '.join(missing)} (add them to MEANINGS)")
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
