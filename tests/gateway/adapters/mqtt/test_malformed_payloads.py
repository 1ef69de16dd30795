"""Bad input never hurts: a corpus of malformed MQTT payloads through a real broker, and a
hypothesis fuzz of the adapter's message handling. 0 crashes, each one dead-lettered with a
reason, and good data keeps flowing."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from microfactory.gateway.adapters.base import AdapterContext, ConnectionState, DeviceState
from microfactory.gateway.adapters.mqtt.adapter import MqttAdapter
from microfactory.gateway.config import PipelineSettings, SiteConfig, parse_site_config
from microfactory.gateway.errors import PayloadError
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.runtime import Gateway
from microfactory.gateway.sample import RawSample
from tests.helpers.gateway import ORIGIN_NS, Publisher, site_dict
from tests.helpers.servers import Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults

TS = ORIGIN_NS
# (what is wrong, topic after the prefix, payload); every one must be dead-lettered once
CORPUS: list[tuple[str, str, bytes]] = [
    ("empty payload", "m1/power_active", b""),
    ("not JSON", "m1/power_active", b"hello"),
    ("truncated JSON", "m1/power_active", b'{"ts": 1, "value": '),
    ("invalid UTF-8", "m1/power_active", b'{"value": "\xff\xfe"}'),
    ("JSON array", "m1/power_active", b"[1, 2, 3]"),
    ("JSON string", "m1/power_active", b'"42"'),
    ("JSON null", "m1/power_active", b"null"),
    ("NaN literal", "m1/power_active", b'{"ts": %d, "value": NaN}' % TS),
    ("Infinity literal", "m1/power_active", b'{"ts": %d, "value": Infinity}' % TS),
    ("overflowing float", "m1/power_active", b'{"ts": %d, "value": 1e999}' % TS),
    ("huge integer", "m1/power_active", b'{"ts": %d, "value": %d}' % (TS, 10**400)),
    ("value missing", "m1/power_active", b'{"ts": %d}' % TS),
    ("value is text", "m1/power_active", b'{"ts": %d, "value": "high"}' % TS),
    ("value is an object", "m1/power_active", b'{"ts": %d, "value": {"a": 1}}' % TS),
    ("value is a list", "m1/power_active", b'{"ts": %d, "value": [1]}' % TS),
    ("value is null", "m1/power_active", b'{"ts": %d, "value": null}' % TS),
    ("timestamp missing", "m1/power_active", b'{"value": 1}'),
    ("timestamp is text", "m1/power_active", b'{"ts": "yesterday", "value": 1}'),
    ("timestamp is bool", "m1/power_active", b'{"ts": true, "value": 1}'),
    ("timestamp in 1970", "m1/power_active", b'{"ts": 5, "value": 1}'),
    ("timestamp far future", "m1/power_active", b'{"ts": %d, "value": 1}' % (TS * 2)),
    ("timestamp negative", "m1/power_active", b'{"ts": -1000, "value": 1}'),
    ("timestamp beyond int64", "m1/power_active", b'{"ts": 1e30, "value": 1}'),
    ("text too long", "m1/program", b'{"ts": %d, "value": "%s"}' % (TS, b"x" * 5000)),
    ("text signal gets a number", "m1/program", b'{"ts": %d, "value": 3}' % TS),
    ("unknown machine", "m99/power_active", b'{"ts": %d, "value": 1}' % TS),
    ("machine not lowercase", "M1/power_active", b'{"ts": %d, "value": 1}' % TS),
    ("signal with spaces", "m1/power%20active", b'{"ts": %d, "value": 1}' % TS),
    ("signal too long", "m1/" + "s" * 100, b'{"ts": %d, "value": 1}' % TS),
    (
        "payload too big",
        "m1/power_active",
        b'{"ts": %d, "value": 1, "pad": "%s"}' % (TS, b"x" * 300_000),
    ),
    ("deeply nested", "m1/power_active", b"[" * 100_000 + b"]" * 100_000),
]


async def test_malformed_corpus_is_dead_lettered_and_data_keeps_flowing(
    tmp_path: Path, mosquitto: Mosquitto, prefix: str, publisher_factory: type[Publisher]
) -> None:
    data = site_dict(tmp_path, mosquitto.url, prefix=prefix)
    data["local_history"] = {"enabled": True, "path": str(tmp_path / "history.sqlite")}
    gw = Gateway(parse_site_config(data, "faults"))
    await gw.start()
    pub = publisher_factory(mosquitto.url, prefix)
    try:
        await wait_for(lambda: gw.health.connections.get("mqtt-in") == "connected", 15, "mqtt")
        await asyncio.to_thread(pub.wait_connected)
        await asyncio.sleep(0.3)
        for i, (_, topic, payload) in enumerate(CORPUS):
            pub.publish_raw(f"{prefix}/{topic}", payload)
            pub.publish_one("m2")  # a good sample after each bad one
            assert i < len(CORPUS)
        await asyncio.to_thread(pub.wait_all_acked)
        await wait_for(
            lambda: (
                sum(gw.health.dead_lettered.values()) >= len(CORPUS)
                and gw.health.spooled >= len(CORPUS)
            ),
            30,
            "every bad message dead-lettered and every good one spooled",
        )
        await wait_for(lambda: gw.spool.depth("local_history") == 0, 30, "good data delivered")
    finally:
        await gw.stop(timeout_s=10)

    assert sum(gw.health.dead_lettered.values()) == len(CORPUS), gw.health.snapshot()
    assert gw.health.spooled == len(CORPUS)  # exactly the good ones
    assert gw.health.delivered["local_history"] == len(CORPUS)
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        rows = db.execute("SELECT source, origin, reason FROM dead_letters").fetchall()
    assert len(rows) == len(CORPUS)
    assert all(reason.strip() for _, _, reason in rows), rows
    assert all(origin for _, origin, _ in rows), rows


class Recorder:
    """The Emitter an adapter talks to, recording what it was told (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.submitted: list[RawSample] = []
        self.dead: list[str] = []
        self.devices: list[tuple[str, DeviceState]] = []
        self.acks = 0

    def submit(self, samples: list[RawSample], ack: Callable[[], None] | None = None) -> None:
        with self.lock:
            self.submitted.extend(samples)
            self.acks += 1

    def dead_letter(
        self,
        source: str,
        origin: str,
        reason: str,
        payload: bytes,
        ack: Callable[[], None] | None = None,
    ) -> None:
        with self.lock:
            self.dead.append(reason)
            self.acks += 1

    def connection(self, adapter: str, state: ConnectionState) -> None:
        pass

    def gap(self, machine: str, start_ns: int, end_ns: int, reason: str) -> None:
        pass

    def device(self, adapter: str, device: str, state: DeviceState) -> None:
        with self.lock:
            self.devices.append((device, state))


def _fuzz_site() -> SiteConfig:
    data = site_dict(Path("/nonexistent"), "mqtt://127.0.0.1:1", prefix="fz")
    data["adapters"][0]["stale_after_s"] = 60
    data["adapters"][0]["subscriptions"] += [
        {
            "topic": "fz/obj/{machine}",
            "timestamp": {"path": "t.when", "format": "auto", "timezone": "Europe/Paris"},
            "fields": [
                {"path": "power.value", "signal": "power_active", "unit_path": "power.unit"},
                {"path": "state", "signal": "state", "value_map": {"RUN": "running"}},
                {"path": "n", "signal": "part_count", "scale": 2.0},
                {"path": "on", "signal": "online", "value_map": {"ON": 1, "OFF": 0}},
            ],
        },
        {
            "topic": "fz/text/{machine}/{signal}",
            "format": "text",
            "value": {"path": None, "unit": "V", "value_map": {"ON": 1, "OFF": 0}},
        },
        {
            "topic": "fz/csv/{machine}",
            "format": "csv",
            "delimiter": ";",
            "timestamp": {"column": 0, "format": "auto", "timezone": "Europe/Paris"},
            "columns": [None, "voltage_l1", {"signal": "current_l1", "unit": "mA"}, "state"],
        },
        {
            "topic": "fz/kv/{machine}",
            "format": "keyvalue",
            "timestamp": {"path": "T", "timezone": "Europe/Paris"},
            "fields": [
                {"path": "V1", "signal": "voltage_l1"},
                {"path": "P", "signal": "power_active", "unit_path": "U"},
                {"path": "S", "signal": "online", "value_map": {"ON": 1, "OFF": 0}},
            ],
        },
        {"topic": "fz/lwt/{machine}", "availability": {}},
        {"topic": "fz/status/{machine}", "availability": {"path": "status"}},
    ]
    return parse_site_config(data, "fuzz")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
object_payloads = st.fixed_dictionaries(
    {},
    optional={
        "ts": json_values,
        "value": json_values,
        "t": st.fixed_dictionaries({}, optional={"when": json_values}),
        "power": st.fixed_dictionaries({}, optional={"value": json_values, "unit": json_values}),
        "state": json_values,
        "n": json_values,
    },
).map(lambda d: orjson.dumps(d, option=orjson.OPT_NON_STR_KEYS) if _dumpable(d) else b"{}")
# text-like payloads made of the pieces real devices send: numbers, units, words, times
_pieces = st.sampled_from(
    [
        "230.5",
        "-1",
        "1e3",
        "12",
        "0",
        "1.2kWh",
        " V",
        "mA",
        "W",
        "kW",
        "volts",
        "ON",
        "off",
        "RUN",
        "online",
        "Offline",
        "2024-03-31T02:30:00",
        "2024-10-27T02:30:00",
        "2024-01-15T10:30:00+01:00",
        "1718000000",
        "=",
        ":",
        ";",
        ",",
        " ",
        "\n",
        '"',
        "V1",
        "P",
        "U",
        "S",
        "T",
        "\x00",
        "\x1b",
        "é",
        "1" * 5000,
    ]
)
text_payloads = st.lists(_pieces, max_size=12).map(lambda xs: "".join(xs).encode())
status_payloads = st.fixed_dictionaries({}, optional={"status": json_values}).map(
    lambda d: orjson.dumps(d) if _dumpable(d) else b"{}"
)
payloads = st.binary(max_size=200) | object_payloads | text_payloads | status_payloads
topics = st.sampled_from(
    [
        "fz/m1/power_active",
        "fz/obj/m2",
        "fz/m9/x",
        "fz/m1/a b",
        "other/t",
        "fz/text/m1/voltage_l1",
        "fz/text/m1/online",
        "fz/text/m2/program",
        "fz/csv/m3",
        "fz/kv/m4",
        "fz/lwt/m1",
        "fz/status/m2",
    ]
)


def _dumpable(d: object) -> bool:
    try:
        orjson.dumps(d)
    except (TypeError, orjson.JSONEncodeError):
        return False
    return True


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(topic=topics, payload=payloads)
def test_fuzzed_messages_never_crash_and_are_accounted(topic: str, payload: bytes) -> None:
    site = _fuzz_site()
    emitter = Recorder()
    context = AdapterContext(
        site=site.site,
        machines=frozenset(m.id for m in site.machines),
        emitter=emitter,
        logger=logging.getLogger("fuzz"),
        state_dir=Path("/nonexistent"),
    )
    adapter = MqttAdapter(site.adapters[0], context)  # type: ignore[arg-type]
    adapter._handle(topic, payload, None)
    # one message, one outcome: its samples went on, or it was dead-lettered with a reason
    assert emitter.acks == 1
    if emitter.dead:
        assert emitter.dead[0].strip()
        assert not emitter.submitted
    normalise = Normaliser(PipelineSettings())
    for raw in emitter.submitted:
        try:
            sample = normalise(raw, ORIGIN_NS)
        except PayloadError as err:
            assert str(err).strip()
        else:
            assert isinstance(sample.value, float | str)
