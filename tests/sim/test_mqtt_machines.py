"""The MQTT machines on a real Mosquitto, as a real paho subscriber receives them."""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from microfactory.mqtt.settings import parse_mqtt_url
from microfactory.sim.machines import ASSEMBLY, PRINTER
from microfactory.sim.mqtt_machine import METER_QUANTITIES
from microfactory.sim.truth import load_truth
from microfactory.sim.workshop import Workshop
from tests.helpers.servers import Mosquitto

from .util import settings

pytestmark = pytest.mark.integration


class Subscriber:
    """A plain paho client on ``microfactory/sim/#`` (QoS 1) that keeps every message."""

    def __init__(self, url: str) -> None:
        addr = parse_mqtt_url(url)
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self._subscribed = threading.Event()
        self._lock = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="sim-test-subscriber")
        self.client.on_connect = lambda c, *_: c.subscribe("microfactory/sim/#", qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(addr.host, addr.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "subscriber could not subscribe"

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, orjson.loads(msg.payload)))
            self._lock.notify_all()

    def wait_for(self, n: int, timeout_s: float) -> None:
        """Block until ``n`` messages have arrived or the timeout passed (QoS 1 stragglers)."""
        with self._lock:
            self._lock.wait_for(lambda: len(self.messages) >= n, timeout_s)

    def count(self) -> int:
        with self._lock:
            return len(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def test_every_published_message_arrives_with_its_dialect(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    truth_dir = tmp_path / "truth"
    ws = Workshop(
        settings(truth_dir, speed=600.0, mqtt_url=mosquitto.url), specs=(PRINTER, ASSEMBLY)
    )
    await ws.start(paused=True)  # links connected, nothing published yet
    sub = Subscriber(mosquitto.url)
    try:
        assert ws.mqtt_topics == {
            "printer-1": "microfactory/sim/printer-1/telemetry",
            "assembly-1": "microfactory/sim/assembly-1/status",
            "meter-1": "microfactory/sim/meter-1/+",
        }
        await asyncio.sleep(0.3)
        assert sub.count() == 0, "a paused workshop publishes nothing over MQTT"
        await ws.resume()
        await asyncio.sleep(2.5)
    finally:
        await ws.stop()
    truth = load_truth(truth_dir)
    expected = sum(1 for p in truth.published if p.signal == "energy_active")
    expected += 7 * len(truth.published_of("meter-1", "energy_active"))  # the other quantities
    sub.wait_for(expected, timeout_s=5)
    sub.close()

    by_topic: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for topic, payload in sub.messages:
        by_topic[topic].append(payload)
    assert sub.count() == expected, f"received {sub.count()} messages, the truth lists {expected}"

    printer = by_topic["microfactory/sim/printer-1/telemetry"]
    assert [(m["ts"] * 1_000_000, m["energy_wh"]) for m in printer] == [
        (r.ts_ns, r.value) for r in truth.published_of("printer-1", "energy_active")
    ], "printer messages must be what the ground truth says was published, in order"
    for m in printer:
        assert set(m) == {
            "ts", "state", "power_w", "energy_wh", "parts_total", "good", "scrap",
            "nozzle_temp_c", "bed_temp_c", "job",
        }  # fmt: skip
        assert m["parts_total"] == m["good"] + m["scrap"]

    assembly = by_topic["microfactory/sim/assembly-1/status"]
    for m in assembly:
        assert m["timestamp"].endswith("Z") and datetime.fromisoformat(m["timestamp"])
        assert m["power"]["unit"] == "kW" and m["energy"]["unit"] == "kWh"
        assert m["counters"]["total"] == m["counters"]["ok"] + m["counters"]["nok"]

    for machine, counts in (
        ("printer-1", [m["parts_total"] for m in printer]),
        ("assembly-1", [m["counters"]["total"] for m in assembly]),
    ):
        parts = truth.parts_of(machine)
        assert parts, f"{machine} made no part in the run"
        steps = {b - a for a, b in itertools.pairwise(counts)}
        assert steps <= {0, 1}, f"{machine}: a part counter increment was skipped: {counts}"
        assert counts[0] == 0 and counts[-1] == len(parts)

    for quantity in METER_QUANTITIES:
        msgs = by_topic[f"microfactory/sim/meter-1/{quantity}"]
        assert msgs, f"meter published no {quantity}"
        assert all(set(m) == {"value", "unit", "ts"} for m in msgs)
    energy = [m["value"] for m in by_topic["microfactory/sim/meter-1/energy_total"]]
    assert energy == sorted(energy) and energy[-1] > 0, "the meter's kWh never go down"
