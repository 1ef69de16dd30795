"""Refused by the receiver when the broker is open (issue 12, findings 1 and 2).

A real Mosquitto that lets anyone publish anywhere, the real MES (its MQTT bridge, SQLite) and
the real gateway MES link. A second, anonymous client forges events and contexts; the MES
stores none of them and the gateway keeps the tags of the running batch. With a signing key
on both sides, unsigned and wrongly signed messages are refused and signed ones flow end to
end. Every wait is for a counter the receiver moves, never a sleep.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from microfactory import contract
from microfactory.cli.ports import free_port
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.sinks.mes_events.link import MesLink
from microfactory.mes import db
from microfactory.mes.api.app import create_app
from microfactory.mes.bridge import MqttBridge
from microfactory.mes.demo import DemoMes
from microfactory.mes.models import Downtime, EventRecord, Gap, MachineStateRecord, Part
from microfactory.mes.seed import seed_demo, start_demo_batches
from microfactory.mes.server import serve_in_loop
from microfactory.mes.settings import MesSettings
from tests.helpers.mes_wire import mill_cycle, retained
from tests.helpers.servers import Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

S = 1_000_000_000
KEY = "wire-checks-signing-key-0123456789abcdef"
WRONG_KEY = "not-the-key-of-this-site-0123456789abcdef"
DEMO_MILL = {
    "order": "SO-1001",
    "batch": "SO-1001-01",
    "operation": "20:mill bores",
    "product": "BRK-100",
}
MILL_EVENTS = contract.event_topic("demo", "mill-1")
MILL_CONTEXT = contract.context_topic("demo", "mill-1")


async def _start_mes(url: str, tmp: Path, key: str | None = None) -> DemoMes:
    """The demo MES (seeded, batches running) with the bridge's signing key set or not."""
    settings = MesSettings(
        db_url=f"sqlite:///{tmp / 'mes.sqlite'}",
        mqtt_url=url,
        site="demo",
        host="127.0.0.1",
        port=free_port(),
        demo=True,
        mqtt_client_id="wire-checks-mes",
        mqtt_signing_key=key,
    )
    app = create_app(settings)
    runtime = app.state.runtime
    with db.session_scope(runtime.sessions) as session:
        seed_demo(session)
        start_demo_batches(session)
    server = await serve_in_loop(app, "127.0.0.1", settings.port)
    return DemoMes(url=server.url, settings=settings, runtime=runtime, server=server)


def _link(url: str, tmp: Path, key: str | None = None) -> MesLink:
    mes_link: dict[str, Any] = {"publish_timeout_s": 5}
    if key is not None:
        mes_link["signing_key"] = key
    site = parse_site_config(
        {
            "site": "demo",
            "mqtt": {"url": url, "client_id": "wire-checks-gw"},
            "mes_link": mes_link,
            "spool": {"path": str(tmp / "spool.sqlite")},
            "machines": [{"id": "mill-1", "kind": "cnc_mill"}],
        },
        "wire checks",
    )
    return MesLink.from_site(site)


def _bridge(mes: DemoMes) -> MqttBridge:
    bridge = mes.runtime.publisher
    assert isinstance(bridge, MqttBridge)
    return bridge


def _forge(url: str, messages: list[tuple[str, bytes, bool]]) -> None:
    """Publish (topic, payload, retain) as an anonymous client nobody configured."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"intruder-{time.time_ns()}")
    client.connect(host, int(port))
    client.loop_start()
    try:
        for topic, payload, retain in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def _counts(mes: DemoMes) -> dict[str, int]:
    """What forged events would change: parts (and their energy), states, downtimes, gaps."""
    with mes.runtime.sessions() as session:
        counts = {
            model.__name__: session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Part, MachineStateRecord, Downtime, EventRecord, Gap)
        }
        counts["energy_wh"] = int(session.scalar(select(func.sum(Part.energy_wh))) or 0)
    return counts


def _event(kind: str, n: int, **over: Any) -> bytes:
    payload: dict[str, Any] = {
        "event_id": f"forged-{kind}-{n}-{time.time_ns()}",
        "site": "demo",
        "machine": "mill-1",
        "ts_ns": time.time_ns(),
        "kind": kind,
    }
    if kind == "part_completed":
        payload.update(part_count=1000 + n, good=True, energy_wh=3000.0, cycle_time_s=1.0)
    else:
        payload.update(state="fault", previous="running")
    payload.update(over)
    return json.dumps(payload).encode()


def _context(**over: Any) -> bytes:
    payload: dict[str, Any] = {"site": "demo", "machine": "mill-1", "since_ns": time.time_ns()}
    payload.update(order="FORGED", batch="FORGED-01", operation="1:forged", product="FORGED")
    payload.update(over)
    return json.dumps(payload).encode()


async def _chain(url: str, tmp: Path, key: str | None) -> tuple[DemoMes, MesLink]:
    """MES and gateway link up, the link tagged with the demo batch (so the MES subscribed)."""
    mes = await _start_mes(url, tmp / "mes", key)
    link = _link(url, tmp / "gw", key)
    await link.open()
    # the MES subscribes to the events before it publishes the contexts: once the link has
    # the context, forged events reach the bridge
    await wait_for(lambda: link.context.get("mill-1") == DEMO_MILL, 15, "the demo batch's context")
    return mes, link


async def test_forged_events_on_an_open_broker_change_nothing(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    mes, link = await _chain(mosquitto.url, tmp_path, key=None)
    try:
        bridge = _bridge(mes)
        before = _counts(mes)
        padded = _event("part_completed", 4, pad="x" * contract.MAX_EVENT_BYTES)
        await asyncio.to_thread(
            _forge,
            mosquitto.url,
            [
                # the finding: parts and energy on a machine the topic does not name
                (contract.event_topic("demo", "laser-1"), _event("part_completed", 1), False),
                (MILL_EVENTS, _event("state_changed", 2, machine="laser-1"), False),
                (MILL_EVENTS, _event("part_completed", 3, site="other"), False),
                (MILL_EVENTS, padded, False),  # valid but for its size: the cap alone refuses
                (MILL_EVENTS, b"not json at all", False),
            ],
        )
        expected = {"machine": 2, "site": 1, "too_large": 1, "invalid": 1}
        await wait_for(lambda: bridge.refused == expected, 15, f"refusals {expected}")
        assert _counts(mes) == before  # no part, no energy, no state, no downtime, no log row
        assert bridge.ingested == 0
        async with httpx.AsyncClient() as http:  # and a scraper sees them, by reason
            metrics = (await http.get(f"{mes.url}/api/v1/metrics")).text
        assert 'microfactory_mes_mqtt_refused_total{reason="machine"} 2' in metrics

        # the real gateway's events still get in (and the counts above could have moved)
        t0 = time.time_ns() - 3600 * S
        # (the first part after a start has no energy of its own: no earlier counter reading)
        await link.write(
            mill_cycle(t0, 0, 100.0) + mill_cycle(t0, 1, 180.0) + mill_cycle(t0, 2, 265.0)
        )
        await wait_for(lambda: bridge.ingested >= 2, 15, "the gateway's parts")
        after = _counts(mes)
        assert after["Part"] == before["Part"] + 2
        assert after["energy_wh"] == before["energy_wh"] + 85
        assert bridge.refused == expected
    finally:
        await link.close()
        await mes.stop()


async def test_forged_and_empty_contexts_leave_the_running_batch_tags(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    mes, link = await _chain(mosquitto.url, tmp_path, key=None)
    try:
        received = link.contexts_received
        await asyncio.to_thread(
            _forge,
            mosquitto.url,
            [
                (MILL_CONTEXT, _context(machine="laser-1"), True),
                (MILL_CONTEXT, _context(site="other"), True),
                (MILL_CONTEXT, _context(batch="B\\\nmeasurement,x=1 value=0"), True),
                (MILL_CONTEXT, _context(order="O" * 129), True),
                (MILL_CONTEXT, _context(pad="x" * contract.MAX_CONTEXT_BYTES), True),
                (MILL_CONTEXT, b"", True),  # the finding: stripped the batch tags
            ],
        )
        expected = {"machine": 1, "site": 1, "invalid": 2, "too_large": 1, "empty": 1}
        await wait_for(lambda: link.refused == expected, 15, f"refusals {expected}")
        assert link.context["mill-1"] == DEMO_MILL
        assert link.contexts_received == received

        # a context that passes every check is taken (open broker, no key: that is the limit)
        await asyncio.to_thread(
            _forge, mosquitto.url, [(MILL_CONTEXT, _context(batch="OTHER-01"), True)]
        )
        await wait_for(lambda: link.contexts_received == received + 1, 15, "the valid context")
        assert link.context["mill-1"]["batch"] == "OTHER-01"
    finally:
        await link.close()
        await mes.stop()


async def test_with_signing_keys_only_signed_messages_count(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    # the MES's contexts arrive signed and are taken: _chain waits for the demo batch's tags
    mes, link = await _chain(mosquitto.url, tmp_path, key=KEY)
    try:
        bridge = _bridge(mes)
        found = await asyncio.to_thread(retained, mosquitto.url, MILL_CONTEXT, 1, 5.0)
        assert MILL_CONTEXT in found, f"no retained message on {MILL_CONTEXT}"
        on_wire = found[MILL_CONTEXT]
        with pytest.raises(contract.SignatureError):
            contract.open_signed(WRONG_KEY, MILL_CONTEXT, on_wire)
        assert json.loads(contract.open_signed(KEY, MILL_CONTEXT, on_wire))["batch"] == "SO-1001-01"

        laser_context = contract.sign(
            KEY, contract.context_topic("demo", "laser-1"), _context(machine="mill-1")
        )
        await asyncio.to_thread(
            _forge,
            mosquitto.url,
            [
                (MILL_CONTEXT, _context(), True),  # valid, but not signed
                (MILL_CONTEXT, contract.sign(WRONG_KEY, MILL_CONTEXT, _context()), True),
                (MILL_CONTEXT, laser_context, True),  # signed, for another topic
            ],
        )
        expected_ctx = {"signature_missing": 1, "signature_bad": 2}
        await wait_for(lambda: link.refused == expected_ctx, 15, f"context refusals {expected_ctx}")
        assert link.context["mill-1"] == DEMO_MILL

        before = _counts(mes)
        moved = contract.sign(
            KEY, contract.event_topic("demo", "laser-1"), _event("part_completed", 3)
        )
        await asyncio.to_thread(
            _forge,
            mosquitto.url,
            [
                (MILL_EVENTS, _event("part_completed", 1), False),
                (
                    MILL_EVENTS,
                    contract.sign(WRONG_KEY, MILL_EVENTS, _event("state_changed", 2)),
                    False,
                ),
                (MILL_EVENTS, moved, False),  # a signed event replayed on another topic
            ],
        )
        expected = {"signature_missing": 1, "signature_bad": 2}
        await wait_for(lambda: bridge.refused == expected, 15, f"event refusals {expected}")
        assert _counts(mes) == before

        # the gateway's events are signed and taken, end to end
        t0 = time.time_ns() - 3600 * S
        await link.write(mill_cycle(t0, 0, 100.0) + mill_cycle(t0, 1, 180.0))
        await wait_for(lambda: bridge.ingested >= 1, 15, "the gateway's signed part")
        assert _counts(mes)["Part"] == before["Part"] + 1
        assert bridge.refused == expected
    finally:
        await link.close()
        await mes.stop()
