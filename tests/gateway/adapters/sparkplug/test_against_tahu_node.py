"""The Sparkplug adapter against a real edge node (Eclipse Tahu's JavaScript client) over a
real Mosquitto: births and aliased data, a broker restart, a seq gap, deaths, an unknown
alias, a malformed payload."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from microfactory.gateway.adapters.sparkplug.adapter import SparkplugAdapter
from microfactory.gateway.adapters.sparkplug.config import SparkplugAdapterConfig
from microfactory.gateway.sdk import AdapterContext, RawSample
from microfactory.gateway.testing import RecordingEmitter
from tests.helpers.markers import starts_server
from tests.helpers.servers import Mosquitto
from tests.helpers.sparkplug_node import SparkplugEdgeNode, metric
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

MACHINES = frozenset({"press-1"})
METER = [
    metric("Power/Active", 1, "Double", 1.5, eng_unit="kW"),
    metric("Energy/Import", 2, "Double", 1000.0, eng_unit="kWh"),
    metric("Running", 3, "Boolean", True),
    metric("Status", 4, "String", "RUN"),
    metric("Temperature", 5, "Float", 40.5),
    metric("Alarm", 6, "Boolean", False),
]
MAPPED = [
    {"name": "Power/Active", "signal": "power_active"},
    {"name": "Energy/Import", "signal": "energy_active"},
    {"name": "Running", "signal": "spindle_running"},  # an integrator's own signal
    {"name": "Status", "signal": "state"},
]

NodeFactory = Callable[..., SparkplugEdgeNode]


@pytest.fixture
def group() -> str:
    return f"g{uuid.uuid4().hex[:8]}"


@pytest.fixture
@starts_server("Eclipse Tahu Sparkplug B edge node (node)")
def edge_node(mosquitto: Mosquitto, group: str, tmp_path: Path) -> Iterator[NodeFactory]:
    """Start edge nodes on the test's broker: ``edge_node(devices=...)``; all stopped after."""
    started: list[SparkplugEdgeNode] = []

    def start(**options: Any) -> SparkplugEdgeNode:
        options.setdefault("node", "N")
        options.setdefault("devices", {"meter": METER})
        node = SparkplugEdgeNode(
            tmp_path / f"edge-node-{len(started)}", url=mosquitto.url, group=group, **options
        )
        started.append(node)
        node.start()
        node.ready()
        return node

    yield start
    for node in started:
        node.stop()


class Running:
    """An adapter under test with its recording emitter."""

    def __init__(self, adapter: SparkplugAdapter, emitter: RecordingEmitter) -> None:
        self.adapter = adapter
        self.emitter = emitter

    def values(self, signal: str) -> list[object]:
        return [s.value for s in self.samples(signal)]

    def samples(self, signal: str) -> list[RawSample]:
        samples, _, _ = self.emitter.snapshot()
        return [s for s in samples if s.signal == signal]

    async def value(self, signal: str, expected: object, what: str) -> None:
        await wait_for(lambda: expected in self.values(signal), 15, what)


@pytest.fixture
async def adapter_factory(
    mosquitto: Mosquitto, group: str, tmp_path: Path
) -> AsyncIterator[Callable[..., Any]]:
    running: list[Running] = []

    async def start(**overrides: Any) -> Running:
        data = {
            "type": "sparkplug",
            "name": "spb",
            "broker": mosquitto.url,
            "client_id": f"gw-{group}",
            "group_id": group,
            "edge_node": "N",
            "device": "meter",
            "machine": "press-1",
            "metrics": MAPPED,
            "rebirth_interval_s": 0.5,
            **overrides,
        }
        config = SparkplugAdapterConfig.model_validate(data)
        emitter = RecordingEmitter(adapter=config.name, machines=MACHINES, ack_delay_s=0.01)
        context = AdapterContext(
            site="test",
            machines=MACHINES,
            emitter=emitter,
            logger=logging.getLogger(f"microfactory.test.sparkplug.{group}"),
            state_dir=tmp_path / "state",
        )
        one = Running(SparkplugAdapter(config, context), emitter)
        running.append(one)
        await one.adapter.start()
        await wait_for(lambda: emitter.states[-1:] == ["connected"], 15, "the adapter connected")
        return one

    yield start
    for one in running:
        await one.adapter.stop(5)
        assert not one.emitter.violations, one.emitter.violations


def publish_raw(broker: Mosquitto, topic: str, payload: bytes) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-{uuid.uuid4().hex[:6]}")
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    client.publish(topic, payload, qos=1).wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


# ---------------------------------------------------------------------------- the tests
async def test_births_and_aliased_data_become_signals(
    edge_node: NodeFactory, adapter_factory: Callable[..., Any]
) -> None:
    node = edge_node()  # born before the adapter listens: its connect asks for a rebirth
    gw: Running = await adapter_factory(
        metrics=[*MAPPED, {"name": "Alarm", "signal": "temperature"}]
    )
    await wait_for(lambda: node.count("rebirth") >= 1, 15, "the rebirth asked for at connect")
    await gw.value("power_active", 1.5, "the birth's current power")
    (power,) = gw.samples("power_active")[:1]
    assert power.unit == "kW", "the unit comes from the birth's engUnit property"
    assert power.machine == "press-1" and power.ts_ns is not None
    assert (
        gw.values("energy_active")[:1] == [1000.0] and gw.samples("energy_active")[0].unit == "kWh"
    )
    assert gw.values("spindle_running")[:1] == [True]
    assert gw.values("state")[:1] == ["RUN"]
    assert gw.values("online")[-1:] == [True]
    assert gw.emitter.device_state(f"{gw.adapter.config.group_id}/N/meter") == "live"

    # DDATA by alias only, with the node's payload timestamp
    node.ddata("meter", [{"alias": 1, "type": "Double", "value": 2.5}])
    node.ddata("meter", [{"alias": 4, "type": "String", "value": "IDLE"}])
    await gw.value("power_active", 2.5, "aliased DDATA")
    await gw.value("state", "IDLE", "aliased text DDATA")
    latest = gw.samples("power_active")[-1]
    assert latest.unit == "kW" and latest.origin.endswith("/DDATA/N/meter:Power/Active")

    # a boolean is never a temperature; an unmapped metric is counted, not an error
    _, letters, _ = gw.emitter.snapshot()
    assert any("'Alarm'" in d.reason and "temperature" in d.reason for d in letters), letters
    assert gw.adapter.counters["unmapped"] >= 1  # Temperature
    assert not gw.values("temperature")
    assert not gw.emitter.refused, gw.emitter.refused


async def test_broker_restart_node_rebirths_and_data_flows_again(
    mosquitto: Mosquitto, edge_node: NodeFactory, adapter_factory: Callable[..., Any]
) -> None:
    node = edge_node()
    gw: Running = await adapter_factory()
    await gw.value("power_active", 1.5, "the birth before the restart")
    births = node.count("birth")
    await asyncio.to_thread(mosquitto.stop)
    await wait_for(lambda: gw.emitter.states[-1] != "connected", 15, "the adapter noticing")
    await asyncio.sleep(0.5)
    await asyncio.to_thread(mosquitto.start)
    await wait_for(lambda: gw.emitter.states[-1] == "connected", 30, "the adapter reconnecting")
    await asyncio.to_thread(node.wait_event, "birth", births + 1, 30)
    node.ddata("meter", [{"alias": 1, "type": "Double", "value": 7.25}])
    await gw.value("power_active", 7.25, "data after the restart")
    _, _, gaps = gw.emitter.snapshot()
    assert gaps and {g.machine for g in gaps} == {"press-1"}, gaps
    # the supervisor's gap for the outage; Mosquitto also sends the node's will (NDEATH) as
    # it shuts down, so the device's own offline spell may be reported too
    assert any("refused" in g.reason or "lost" in g.reason for g in gaps), gaps


async def test_seq_gap_asks_for_a_rebirth_and_gets_it(
    edge_node: NodeFactory, adapter_factory: Callable[..., Any]
) -> None:
    node = edge_node()
    gw: Running = await adapter_factory()
    await wait_for(lambda: node.count("rebirth") >= 1, 15, "the connect-time rebirth")
    await gw.value("power_active", 1.5, "the births")
    await asyncio.sleep(0.6)  # past rebirth_interval_s of the connect-time request
    rebirths = node.count("rebirth")
    node.command("skip_seq")  # the next DDATA looks as if one message was lost
    node.ddata("meter", [{"alias": 1, "type": "Double", "value": 3.5}])
    await gw.value("power_active", 3.5, "the DDATA after the gap (its values are good)")
    await asyncio.to_thread(node.wait_event, "rebirth", rebirths + 1, 15)
    assert gw.adapter.counters["seq_gaps"] == 1
    assert gw.adapter.rebirth_reasons["seq gap"] == 1
    node.ddata("meter", [{"alias": 1, "type": "Double", "value": 4.5}])
    await gw.value("power_active", 4.5, "data after the rebirth")
    assert gw.adapter.counters["seq_gaps"] == 1, "the rebirth resynchronised seq"


async def test_death_makes_the_device_offline_and_its_rebirth_reports_the_gap(
    edge_node: NodeFactory, adapter_factory: Callable[..., Any]
) -> None:
    node = edge_node()
    gw: Running = await adapter_factory()
    device = f"{gw.adapter.config.group_id}/N/meter"
    await gw.value("power_active", 1.5, "the births")
    await asyncio.sleep(0.2)

    node.command("raw_ndeath", bdSeq=7)  # a late death of another session: ignored
    await wait_for(lambda: gw.adapter.counters["stale_deaths"] == 1, 15, "the stale NDEATH")
    assert gw.emitter.device_state(device) == "live"

    node.command("die")  # socket cut: the broker publishes the node's NDEATH will
    await wait_for(lambda: gw.emitter.device_state(device) == "offline", 15, "offline")
    assert gw.values("online")[-1] is False
    assert gw.samples("online")[-1].machine == "press-1"
    # its last values again at the death, marked uncertain (Sparkplug's STALE)
    stale = gw.samples("power_active")[-1]
    assert (stale.value, stale.quality) == (1.5, "uncertain")
    assert stale.ts_ns == gw.samples("online")[-1].ts_ns
    await asyncio.sleep(1.0)
    births = node.count("birth")
    node.command("revive")
    await asyncio.to_thread(node.wait_event, "birth", births + 1, 15)
    await wait_for(lambda: gw.emitter.device_state(device) == "live", 15, "live again")
    assert gw.values("online")[-1] is True
    _, _, gaps = gw.emitter.snapshot()
    assert len(gaps) == 1 and gaps[0].machine == "press-1", gaps
    assert "offline" in gaps[0].reason and "NDEATH" in gaps[0].reason, gaps[0].reason
    assert (gaps[0].end_ns - gaps[0].start_ns) / 1e9 >= 1.0, "the gap covers the dead time"

    # a device death alone
    node.command("ddeath", device="meter")
    await wait_for(lambda: gw.emitter.device_state(device) == "offline", 15, "DDEATH")
    assert gw.values("online")[-1] is False


async def test_unknown_alias_asks_for_a_rebirth(
    edge_node: NodeFactory, adapter_factory: Callable[..., Any]
) -> None:
    node = edge_node()
    gw: Running = await adapter_factory()
    await gw.value("power_active", 1.5, "the births")
    await asyncio.sleep(0.6)
    rebirths = node.count("rebirth")
    node.ddata("meter", [{"alias": 42, "type": "Double", "value": 1.0}])
    await asyncio.to_thread(node.wait_event, "rebirth", rebirths + 1, 15)
    assert gw.adapter.counters["unknown_aliases"] == 1
    assert gw.adapter.rebirth_reasons["unknown alias"] == 1


async def test_malformed_payload_is_dead_lettered_and_data_goes_on(
    mosquitto: Mosquitto, edge_node: NodeFactory, adapter_factory: Callable[..., Any]
) -> None:
    node = edge_node()
    gw: Running = await adapter_factory()
    await gw.value("power_active", 1.5, "the births")
    topic = f"spBv1.0/{gw.adapter.config.group_id}/DDATA/N/meter"
    await asyncio.to_thread(publish_raw, mosquitto, topic, b"\xff\xfe not protobuf")
    await wait_for(lambda: gw.emitter.dead_letters != [], 15, "the dead letter")
    (letter,) = gw.emitter.dead_letters
    assert letter.origin == topic and topic in letter.reason and "protobuf" in letter.reason
    assert letter.payload == b"\xff\xfe not protobuf"
    await wait_for(lambda: gw.emitter.acks_pending == 0, 5, "the QoS 1 message acked")
    node.ddata("meter", [{"alias": 1, "type": "Double", "value": 9.0}])
    await gw.value("power_active", 9.0, "data after the bad payload")
