"""Mosquitto restarted while machines publish: persistent sessions on both sides, 0 lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.gateway import Publisher, expected_stats, influx_stats, influx_total, site_dict
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults


async def test_mosquitto_restart_while_machines_publish(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    broker = big_queue_mosquitto
    data = site_dict(tmp_path, broker.url, prefix=prefix, influx_url=influxdb1.url)
    gw = Gateway(parse_site_config(data, "faults"))
    await gw.start()
    pub = publisher_factory(broker.url, prefix)
    states: list[str] = []
    try:
        await wait_for(lambda: gw.health.connections.get("mqtt-in") == "connected", 15, "mqtt")
        await asyncio.to_thread(pub.wait_connected)
        await asyncio.sleep(0.3)
        pub.start(rate_per_s=2000)
        await wait_for(lambda: gw.health.delivered["influxdb"] >= 2000, 30, "first deliveries")

        await asyncio.to_thread(broker.stop)  # SIGTERM: Mosquitto saves its sessions
        await wait_for(
            lambda: gw.health.connections.get("mqtt-in") == "disconnected", 15, "gateway noticing"
        )
        states.append(gw.health.connections["mqtt-in"])
        await asyncio.sleep(1.0)  # machines go on producing into their own queues
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: gw.health.connections.get("mqtt-in") == "connected", 30, "reconnect")
        states.append(gw.health.connections["mqtt-in"])
        await asyncio.sleep(1.0)
        pub.stop_publishing()
        await asyncio.to_thread(pub.wait_all_acked, 60)
        produced = pub.total_acked
        await wait_for(lambda: gw.health.spooled >= produced, 60, f"{produced} spooled")
        await wait_for(lambda: gw.spool.depth("influxdb") == 0, 60, "all delivered")
    finally:
        await gw.stop(timeout_s=10)

    assert states == ["disconnected", "connected"]
    assert await asyncio.to_thread(influx_total, influxdb1, "faults") == produced
    stats = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert stats == {m: expected_stats(pub.sent[m]) for m in pub.machines}
    # the broker may redeliver what was in flight at the restart: spooled twice, stored once
    assert gw.health.spooled >= produced
    assert gw.health.delivered["influxdb"] == gw.health.spooled
    assert not gw.health.dead_lettered
