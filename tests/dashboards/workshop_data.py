"""The simulated workshop's data in a real InfluxDB 1.x, with batch context, for the dashboards.

The simulators feed the real gateway over OPC UA and MQTT (real Mosquitto); this module plays
the MES's part of the wire contract only: it publishes retained ``MachineContext`` messages, so
the gateway tags samples with order / batch / operation exactly as it does under the real MES.
Half-way through, two machines move on to their next batch, so there are several batches to
compare.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from microfactory import contract
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.workshop import workshop_through_gateway

SITE = "demo"
DATABASE = "microfactory"
MACHINES = ("mill-1", "laser-1", "printer-1", "assembly-1", "meter-1")
SPEED = 60.0  # simulated seconds per wall second
RUN_WALL_S = 12.0  # 12 simulated minutes

# machine -> (order, batch, operation, product) at the start; meter-1 works on nothing
FIRST_CONTEXT = {
    "laser-1": ("SO-1001", "SO-1001-B1", "10-cut", "bracket"),
    "mill-1": ("SO-1001", "SO-1001-B1", "20-mill", "bracket"),
    "printer-1": ("SO-1002", "SO-1002-B1", "10-print", "housing"),
    "assembly-1": ("SO-1002", "SO-1002-B1", "20-assemble", "housing"),
}
# half-way through: the laser and the mill start the order's second batch
SECOND_CONTEXT = {
    "laser-1": ("SO-1001", "SO-1001-B2", "10-cut", "bracket"),
    "mill-1": ("SO-1001", "SO-1001-B2", "20-mill", "bracket"),
}
BATCHES = ("SO-1001-B1", "SO-1001-B2", "SO-1002-B1")
ORDERS = ("SO-1001", "SO-1002")


@dataclass(frozen=True)
class WorkshopRun:
    influxdb: InfluxDB1
    database: str
    start_ns: int  # first point written
    end_ns: int  # last point written
    received: int
    dead_lettered: int


def _publish_contexts(url: str, contexts: dict[str, tuple[str, str, str, str]]) -> None:
    """Publish retained MachineContext messages, as the MES does, and wait for the broker."""
    parts = urlsplit(url)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dashboards-mes-{time.time_ns()}")
    client.connect(parts.hostname or "127.0.0.1", parts.port or 1883)
    client.loop_start()
    try:
        infos = []
        for machine, (order, batch, operation, product) in contexts.items():
            ctx = contract.MachineContext(
                site=SITE,
                machine=machine,
                order=order,
                batch=batch,
                operation=operation,
                product=product,
                since_ns=time.time_ns(),
            )
            infos.append(
                client.publish(
                    contract.context_topic(SITE, machine),
                    ctx.model_dump_json().encode(),
                    qos=1,
                    retain=True,
                )
            )
        for info in infos:
            info.wait_for_publish(10)
            assert info.is_published(), "broker did not take the machine context"
    finally:
        client.disconnect()
        client.loop_stop()


async def run_workshop(tmp_path: Path, mosquitto: Mosquitto, influxdb: InfluxDB1) -> WorkshopRun:
    """Run the simulated workshop through the gateway into ``influxdb``; return what was run."""
    await asyncio.to_thread(_publish_contexts, mosquitto.url, FIRST_CONTEXT)

    def configure(data: dict[str, Any]) -> None:
        data["influxdb"] = {"api": "v1", "url": influxdb.url, "database": DATABASE}

    async with workshop_through_gateway(
        tmp_path,
        mosquitto.url,
        seed=7,
        speed=SPEED,
        power_loss_probability=1.0,  # per simulated hour: a counter reset now and then
        data_dir=tmp_path / "gateway",
        site_name="dashboards test site",
        configure=configure,
        contexts=len(FIRST_CONTEXT),
    ) as shop:
        await asyncio.sleep(RUN_WALL_S / 2)
        await asyncio.to_thread(_publish_contexts, mosquitto.url, SECOND_CONTEXT)
        await asyncio.sleep(RUN_WALL_S / 2)
        await shop.finish()
    gw = shop.gateway
    first = influxdb.rows('SELECT first("value") FROM "telemetry"', DATABASE)
    last = influxdb.rows('SELECT last("value") FROM "telemetry"', DATABASE)
    assert first and last, "the gateway wrote nothing to InfluxDB"
    return WorkshopRun(
        influxdb=influxdb,
        database=DATABASE,
        start_ns=int(first[0]["time"]),
        end_ns=int(last[0]["time"]),
        received=gw.health.received,
        dead_lettered=sum(gw.health.dead_lettered.values()),
    )
