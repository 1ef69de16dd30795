"""Silent and departed devices behind a live broker, against a real Mosquitto.

A Tasmota plug publishes its SENSOR telemetry (local time, no zone) and has a last will on
``tele/<topic>/LWT``, retained, as Tasmota sets it. The broker stays up throughout: what is
watched is the device, not the connection.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from microfactory.gateway.adapters.base import AdapterContext
from microfactory.gateway.adapters.mqtt.adapter import MqttAdapter
from microfactory.gateway.adapters.mqtt.config import MqttAdapterConfig
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.gateway.testing.emitter import RecordingEmitter
from tests.helpers.servers import Mosquitto
from tests.helpers.waiting import wait_for, wait_for_sync

pytestmark = pytest.mark.integration

PARIS = ZoneInfo("Europe/Paris")


def _sensor() -> bytes:
    """A Tasmota SENSOR message of now, in the plug's local time (Tasmota writes no zone)."""
    local = datetime.now(PARIS).replace(tzinfo=None).isoformat(timespec="seconds")
    return (
        b'{"Time":"%s","ENERGY":{"TotalStartTime":"2023-11-02T18:04:12","Total":12.345,'
        b'"Yesterday":0.412,"Today":0.128,"Power":120,"ApparentPower":126,'
        b'"ReactivePower":39,"Factor":0.95,"Voltage":230,"Current":0.52}}' % local.encode()
    )


class Plug:
    """A Tasmota-like device: a last will ``Offline`` (retained), ``Online`` when connected."""

    def __init__(self, broker: Mosquitto, topic: str) -> None:
        host, port = broker.url.removeprefix("mqtt://").split(":")
        self.topic = topic
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"plug-{topic}", protocol=mqtt.MQTTv311
        )
        self.client.will_set(f"tele/{topic}/LWT", "Offline", qos=1, retain=True)
        self.client.on_connect = lambda c, *_: c.publish(
            f"tele/{topic}/LWT", "Online", qos=1, retain=True
        )
        # keepalive 1 s: the broker gives up on a silent plug after 1.5 s and sends its will
        self.client.connect(host, int(port), keepalive=1)
        self.client.loop_start()
        wait_for_sync(self.client.is_connected, 10, "plug connected")

    def sensor(self) -> None:
        self.client.publish(f"tele/{self.topic}/SENSOR", _sensor(), qos=1).wait_for_publish(5)

    def pull_the_plug(self) -> None:
        """Stop answering without a DISCONNECT: the broker publishes the last will."""
        self.client.loop_stop()

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def topic() -> str:
    return f"plug{uuid.uuid4().hex[:8]}"


@pytest.fixture
def plugs() -> Iterator[list[Plug]]:
    made: list[Plug] = []
    yield made
    for plug in made:
        plug.close()


def _config(broker: Mosquitto, topic: str, **adapter: Any) -> MqttAdapterConfig:
    site = parse_site_config(
        {
            "machines": [{"id": "press-1"}, {"id": "press-2"}],
            "adapters": [
                {
                    "type": "mqtt",
                    "name": "plugs",
                    "broker": broker.url,
                    "client_id": f"gw-{topic}-{uuid.uuid4().hex[:4]}",
                    "subscriptions": [
                        {
                            "topic": f"tele/{topic}/SENSOR",
                            "machine": "press-1",
                            "timestamp": {
                                "path": "Time",
                                "format": "iso8601",
                                "timezone": "Europe/Paris",
                            },
                            "fields": [
                                {"path": "ENERGY.Total", "signal": "energy_active", "unit": "kWh"},
                                {"path": "ENERGY.Power", "signal": "power_active"},
                                {"path": "ENERGY.Current", "signal": "current_l1"},
                            ],
                        },
                        {
                            "topic": f"tele/{topic}/LWT",
                            "machine": "press-1",
                            "availability": {},
                        },
                    ],
                    **adapter,
                }
            ],
        },
        "devices test",
    )
    config = site.adapters[0]
    assert isinstance(config, MqttAdapterConfig)
    return config


def _adapter(config: MqttAdapterConfig, tmp_path: Path) -> tuple[MqttAdapter, RecordingEmitter]:
    emitter = RecordingEmitter("plugs", {"press-1", "press-2"})
    context = AdapterContext(
        site="devices",
        machines=frozenset({"press-1", "press-2"}),
        emitter=emitter,
        logger=logging.getLogger("test.plugs"),
        state_dir=tmp_path,
    )
    return MqttAdapter(config, context), emitter


async def test_silent_device_goes_stale_and_its_silence_becomes_a_gap(
    tmp_path: Path, mosquitto: Mosquitto, topic: str, plugs: list[Plug]
) -> None:
    adapter, emitter = _adapter(_config(mosquitto, topic, stale_after_s=1.0), tmp_path)
    await adapter.start()
    try:
        await wait_for(lambda: adapter.supervisor.state == "connected", 10, "adapter connected")
        # a fixed machine with a stale limit is watched from the start, before it speaks
        assert adapter.devices.state("press-1") == "live"
        plug = Plug(mosquitto, topic)
        plugs.append(plug)
        plug.sensor()
        await wait_for(lambda: emitter.count() >= 3, 10, "the plug's first samples")
        first = emitter.snapshot()[0]
        assert {(s.signal, s.value) for s in first} >= {("energy_active", 12.345)}
        assert not emitter.refused, emitter.refused  # the local time was taken, not refused
        ts_ns = first[0].ts_ns
        assert ts_ns is not None and abs(ts_ns - time.time_ns()) < 5 * 10**9  # Paris time

        silent_from = time.time_ns()
        await wait_for(lambda: emitter.device_state("press-1") == "stale", 5, "press-1 stale")
        assert adapter.supervisor.state == "connected"  # the broker is fine all along
        assert not emitter.gaps
        plug.sensor()
        await wait_for(lambda: emitter.device_state("press-1") == "live", 5, "press-1 live")
        await wait_for(lambda: emitter.gaps, 5, "the gap of the silence")
        [gap] = emitter.gaps
        assert gap.machine == "press-1"
        assert gap.start_ns <= silent_from and gap.end_ns - gap.start_ns >= 10**9
        assert "no data for" in gap.reason
    finally:
        await adapter.stop(3)
    assert [s for _, s in emitter.devices] == ["live", "stale", "live"]
    assert not emitter.dead_letters, emitter.dead_letters
    assert not emitter.violations, emitter.violations


async def test_last_will_marks_the_device_offline_retained_included(
    tmp_path: Path, mosquitto: Mosquitto, topic: str, plugs: list[Plug]
) -> None:
    config = _config(mosquitto, topic)
    adapter, emitter = _adapter(config, tmp_path)
    await adapter.start()
    try:
        await wait_for(lambda: adapter.supervisor.state == "connected", 10, "adapter connected")
        plug = Plug(mosquitto, topic)
        plugs.append(plug)
        await wait_for(lambda: emitter.device_state("press-1") == "live", 10, "plug online")
        plug.sensor()
        await wait_for(lambda: emitter.count() >= 4, 10, "online + the plug's samples")
        plug.pull_the_plug()
        await wait_for(lambda: emitter.device_state("press-1") == "offline", 10, "last will")
        online = [(s.value, s.unit) for s in emitter.snapshot()[0] if s.signal == "online"]
        assert online == [(True, None), (False, None)]
    finally:
        await adapter.stop(3)
    assert not emitter.refused, emitter.refused  # online True/False stored as 1.0 / 0.0
    assert not emitter.violations, emitter.violations

    # a gateway started later learns it from the retained last will, before any data
    later, emitter2 = _adapter(config.model_copy(update={"client_id": f"gw2-{topic}"}), tmp_path)
    await later.start()
    try:
        await wait_for(lambda: emitter2.device_state("press-1") == "offline", 10, "retained")
        plug = Plug(mosquitto, topic)  # the plug comes back
        plugs.append(plug)
        plug.sensor()
        await wait_for(lambda: emitter2.gaps, 10, "the gap of the offline spell")
        assert emitter2.device_state("press-1") == "live"
        assert emitter2.gaps[0].machine == "press-1"
        assert "offline: 'Offline' on tele/" in emitter2.gaps[0].reason
    finally:
        await later.stop(3)
    assert not emitter2.violations, emitter2.violations


async def test_health_shows_the_stale_device(
    tmp_path: Path, mosquitto: Mosquitto, topic: str
) -> None:
    config = _config(mosquitto, topic, stale_after_s=0.5)
    site = parse_site_config(
        {
            "site": "devices",
            "machines": [{"id": "press-1"}, {"id": "press-2"}],
            "adapters": [config.model_dump(exclude_unset=True)],
            "local_history": {"enabled": False},
            "spool": {"path": str(tmp_path / "spool.sqlite")},
            "health": {"port": 0},
        },
        "devices test",
    )
    gw = Gateway(site)
    await gw.start()
    try:
        await wait_for(
            lambda: gw.health.devices.get(("plugs", "press-1")) == "stale", 10, "health: stale"
        )
        devices = gw.health.snapshot()["devices"]
        assert isinstance(devices, dict) and devices["plugs/press-1"] == "stale"
    finally:
        await gw.stop(timeout_s=5)
