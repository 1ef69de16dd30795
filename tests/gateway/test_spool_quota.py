"""An outage longer than the spool quota with ``drop_oldest``: the oldest go, drops counted.

``stop_accepting`` holds what does not fit and acknowledges nothing it did not store; its
outage test is tests/gateway/test_stop_accepting_acks.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.gateway import (
    ORIGIN_NS,
    STEP_NS,
    Publisher,
    both_connected,
    influx_stats,
    site_dict,
)
from tests.helpers.overloaded_influx import OverloadedInflux
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults

QUOTA = 1 << 20  # the smallest quota the config allows: about 15k samples
PER_MACHINE = 10_000  # 40k samples during the outage: well over the quota


async def test_outage_longer_than_the_quota(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    with OverloadedInflux(influxdb1.url) as server:
        server.hold.set()  # InfluxDB "down" (503) from the start
        data = site_dict(
            tmp_path,
            big_queue_mosquitto.url,
            prefix=prefix,
            influx_url=server.url,
            batch_size=5000,
            spool={"max_bytes": QUOTA, "overflow": "drop_oldest"},
        )
        gw = Gateway(parse_site_config(data, "faults"))
        await gw.start()
        pub = publisher_factory(big_queue_mosquitto.url, prefix)
        peak = 0
        try:
            await both_connected(gw, pub)
            await asyncio.sleep(0.3)
            pub.publish(PER_MACHINE)
            produced = len(pub.machines) * PER_MACHINE

            def settled() -> bool:
                return gw.health.spooled + gw.health.refused == produced

            deadline = asyncio.get_running_loop().time() + 90
            while not settled():
                assert asyncio.get_running_loop().time() < deadline, gw.health.snapshot()
                peak = max(peak, (await gw.spool.stats()).bytes)
                await asyncio.sleep(0.1)
            await asyncio.to_thread(pub.wait_all_acked)
            peak = max(peak, (await gw.spool.stats()).bytes)
            server.hold.clear()  # InfluxDB back
            await wait_for(lambda: gw.spool.depth("influxdb") == 0, 90, "backlog delivered")
            stats = await gw.spool.stats()
        finally:
            await gw.stop(timeout_s=10)

    delivered = gw.health.delivered["influxdb"]
    dropped = stats.dropped["influxdb"]
    refused = gw.health.refused
    # exact accounting: every sample is delivered or counted, once
    assert delivered + dropped + refused == produced, (delivered, dropped, refused)
    assert stats.delivered["influxdb"] == delivered
    assert stats.refused == refused
    assert peak <= QUOTA * 1.06, f"spool grew to {peak} bytes, quota {QUOTA}"
    assert 0.5 * QUOTA / 100 < delivered < produced  # about a quota's worth was kept
    assert refused == 0 and dropped > 0
    assert stats.dropped_by_reason == {("influxdb", "quota"): dropped}

    series = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert sum(s.count for s in series.values()) == delivered
    for machine, s in series.items():
        first_i = (s.first_ns - ORIGIN_NS) // STEP_NS
        last_i = (s.last_ns - ORIGIN_NS) // STEP_NS
        # what InfluxDB holds of each machine is one unbroken stretch of its samples ...
        assert s.count == last_i - first_i + 1, machine
        assert s.total == sum(range(first_i, last_i + 1)), machine
        assert last_i == PER_MACHINE - 1, machine  # ... the newest ones
