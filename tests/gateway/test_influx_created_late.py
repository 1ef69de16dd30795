"""InfluxDB starts after the gateway (a fresh install): the database is created when the
sink reconnects, and the samples spooled meanwhile arrive."""

from __future__ import annotations

import asyncio
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.gateway import Publisher, both_connected, expected_stats, influx_stats, site_dict
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults


def drop_database(influx: InfluxDB1, name: str) -> None:
    q = urllib.parse.urlencode({"q": f'DROP DATABASE "{name}"'}).encode()
    with urllib.request.urlopen(f"{influx.url}/query", data=q, timeout=30) as resp:
        assert resp.status == 200


async def test_database_created_when_influx_comes_up_late(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    influxdb1.stop()  # not there yet when the gateway starts
    data = site_dict(tmp_path, big_queue_mosquitto.url, prefix=prefix, influx_url=influxdb1.url)
    gw = Gateway(parse_site_config(data, "faults"))
    await gw.start()
    pub = publisher_factory(big_queue_mosquitto.url, prefix)
    try:
        await both_connected(gw, pub)
        pub.publish(250)
        await asyncio.to_thread(pub.wait_all_acked)
        await wait_for(lambda: gw.health.spooled == pub.total_sent, 30, "spooled")
        await wait_for(lambda: gw.health.retried["influxdb"] >= 1, 30, "a failed write")
        await asyncio.to_thread(influxdb1.start)
        await wait_for(lambda: gw.health.delivered["influxdb"] == pub.total_sent, 60, "delivered")
    finally:
        await gw.stop()
    series = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert series == {m: expected_stats(250) for m in pub.machines}


async def test_database_dropped_while_running_is_created_again(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    data = site_dict(tmp_path, big_queue_mosquitto.url, prefix=prefix, influx_url=influxdb1.url)
    gw = Gateway(parse_site_config(data, "faults"))
    await gw.start()
    pub = publisher_factory(big_queue_mosquitto.url, prefix)
    try:
        await both_connected(gw, pub)
        pub.publish(10)
        await wait_for(lambda: gw.health.delivered["influxdb"] == 40, 30, "first delivered")
        await asyncio.to_thread(drop_database, influxdb1, "faults")
        pub.publish(10)  # the next write meets a 404 "database not found"
        await wait_for(lambda: gw.health.delivered["influxdb"] == 80, 30, "delivered again")
    finally:
        await gw.stop()
    total = await asyncio.to_thread(
        influxdb1.rows, 'SELECT count("value") FROM "telemetry"', "faults"
    )
    assert int(total[0]["count"]) == 40  # the ones written after the database came back
    assert gw.health.retried["influxdb"] == 0  # created and retried within the same write
