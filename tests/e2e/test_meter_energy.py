"""A machine measured only by its Modbus meter: energy per part from the meter, within 1 %.

The assembly station's own energy counter is not read at all: its state and part counters
come over MQTT, its power and energy from the simulated Eastron SDM120 on its supply, over
Modbus TCP, through the real gateway (its event deriver) and out on the MES event topic.
Every part's energy is compared with the simulator's ground truth.

A meter has no clock: the gateway stamps its readings with its own receive time. The gateway
runs in the simulated world here (``clock=workshop.now_ns``), as it does in the demo, so a
reading is stamped with the simulated instant it was taken at; the workshop ticks every
20 ms so that a reading is never more than one tick old.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from microfactory.contract import PartCompleted, event_topic
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.mqtt.client import Message, MqttClient
from microfactory.mqtt.settings import MqttSettings
from microfactory.sim.machines import ASSEMBLY
from microfactory.sim.truth import load_truth
from microfactory.sim.workshop import ModbusMeterSettings, Workshop, WorkshopSettings
from tests.helpers.servers import Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

SITE = "metered"
SPEED = 2.0
RUN_WALL_S = 45.0
# a steady station: ten-second cycles, no faults, no idle gaps, one long batch
STATION = dataclasses.replace(
    ASSEMBLY,
    cycle_time_s=10.0,
    setup_s=(3.0, 4.0),
    batch_size=1000,
    idle_gap_probability=0.0,
    mtbf_s=None,
)


def _site(mqtt_url: str, meter_port: int, data_dir: Path) -> dict[str, Any]:
    return {
        "site": SITE,
        "mqtt": {"url": mqtt_url, "client_id": "metered-gw"},
        "mes_link": {"events": True, "hold_s": 30},
        "spool": {"path": str(data_dir / "spool.sqlite"), "durability": "normal"},
        "local_history": {"path": str(data_dir / "history.sqlite")},
        "health": {"enabled": False},
        "machines": [{"id": "assembly-1", "kind": "assembly_station"}],
        "adapters": [
            {
                "type": "mqtt",
                "name": "station",
                "subscriptions": [
                    {
                        "topic": "microfactory/sim/assembly-1/status",
                        "machine": "assembly-1",
                        "timestamp": {"path": "timestamp", "format": "iso8601"},
                        "fields": [  # no power, no energy: those come from the meter
                            {"path": "status", "signal": "state"},
                            {"path": "counters.total", "signal": "part_count"},
                            {"path": "counters.ok", "signal": "good_count"},
                            {"path": "counters.nok", "signal": "scrap_count"},
                        ],
                    }
                ],
            },
            {
                "type": "modbus",
                "name": "station-meter",
                "host": "127.0.0.1",
                "port": meter_port,
                "unit_id": 1,
                "machine": "assembly-1",
                "meter": "eastron_sdm120",
                "poll_interval_ms": 100,
            },
        ],
    }


class EventListener:
    """The MES's side of the wire: every PartCompleted the gateway publishes."""

    def __init__(self, url: str) -> None:
        self.parts: dict[int, PartCompleted] = {}
        self._lock = threading.Lock()
        self.client = MqttClient(
            MqttSettings(url=url, client_id="metered-listener"),
            name="listener",
            on_message=self._message,
        )

    def _message(self, msg: Message) -> None:
        doc = orjson.loads(msg.payload)
        if doc.get("kind") == "part_completed":
            part = PartCompleted.model_validate(doc)
            with self._lock:
                self.parts[part.part_count] = part


async def test_energy_per_part_comes_from_the_meter(mosquitto: Mosquitto, tmp_path: Path) -> None:
    workshop = Workshop(
        WorkshopSettings(
            seed=5,
            speed=SPEED,
            mqtt_url=mosquitto.url,
            opcua_ports={},
            modbus_meters=[ModbusMeterSettings(machine="assembly-1", port=0)],
            truth_dir=tmp_path / "truth",
            power_loss_probability=0.0,
            tick_s=0.02,
        ),
        specs=(STATION,),
    )
    listener = EventListener(mosquitto.url)
    listener.client.start()
    gateway: Gateway | None = None
    try:
        assert await asyncio.to_thread(listener.client.wait_connected, 10)
        listener.client.subscribe([(event_topic(SITE, "assembly-1"), 1)])
        await workshop.start(paused=True)
        _model, port, _unit = workshop.modbus_meters["assembly-1"]
        site = parse_site_config(_site(mosquitto.url, port, tmp_path / "edge"), "metered")
        gateway = Gateway(site, clock=workshop.now_ns)
        await gateway.start()
        gw = gateway
        await wait_for(
            lambda: all(gw.health.connections.get(a.name) == "connected" for a in site.adapters),
            30,
            "both adapters connected",
        )
        await workshop.resume()
        await asyncio.sleep(RUN_WALL_S)
        await workshop.stop()
        await asyncio.sleep(1.0)  # the last polls and events
        await gateway.stop(10.0)
        gateway = None
        await asyncio.sleep(0.5)
    finally:
        if gateway is not None:
            await gateway.stop(10.0)
        await workshop.stop()
        listener.client.stop()

    truth = {p.part_count: p for p in load_truth(tmp_path / "truth").parts_of("assembly-1")}
    assert len(truth) >= 6, f"only {len(truth)} parts made; the run is too short"
    with_energy = {n: p for n, p in listener.parts.items() if p.energy_wh is not None}
    # the first part's window opened while the gateway was not yet reading the counters
    checked = [n for n in sorted(with_energy) if n in truth and n > 1]
    assert len(checked) >= 5, f"parts with meter energy: {sorted(with_energy)}"
    errors = {}
    for n in checked:
        got, want = with_energy[n].energy_wh, truth[n].energy_wh
        assert got is not None
        errors[n] = (got - want) / want
    worst = max(errors.values(), key=abs)
    print(
        f"\nmeter energy per part: {len(checked)} parts, worst error {worst:+.3%}, "
        f"mean |error| {sum(abs(e) for e in errors.values()) / len(errors):.3%}"
    )
    assert all(abs(e) <= 0.01 for e in errors.values()), {n: f"{e:+.3%}" for n, e in errors.items()}
