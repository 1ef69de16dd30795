"""``overflow: stop_accepting`` never acknowledges what it did not store (issue 14).

A tiny quota and InfluxDB "down": the spool fills, the gateway stops acknowledging, and the
MQTT broker keeps what the gateway turned away. When InfluxDB returns, everything arrives:
nothing acknowledged was dropped, nothing is refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.gateway import Publisher, both_connected, expected_stats, influx_stats, site_dict
from tests.helpers.overloaded_influx import OverloadedInflux
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults

QUOTA = 1 << 20  # the smallest quota the config allows: about 15k samples
PER_MACHINE = 8000  # 32k samples: about twice the quota
IN_FLIGHT = 500  # MQTT 5 receive maximum (Mosquitto 2.0.11 may send more once acks flow)


async def test_refused_messages_stay_at_the_broker(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    with OverloadedInflux(influxdb1.url) as relay:
        relay.hold.set()  # InfluxDB "down" (503) from the start
        data = site_dict(
            tmp_path,
            big_queue_mosquitto.url,
            prefix=prefix,
            influx_url=relay.url,
            batch_size=5000,
            spool={"max_bytes": QUOTA, "overflow": "stop_accepting"},
        )
        data["adapters"][0]["receive_maximum"] = IN_FLIGHT
        site = parse_site_config(data, "faults")
        gw = Gateway(site)
        await gw.start()
        assert gw.pipeline is not None
        first = gw.pipeline
        pub = publisher_factory(big_queue_mosquitto.url, prefix)
        try:
            await both_connected(gw, pub)
            pub.publish(PER_MACHINE)
            await asyncio.to_thread(pub.wait_all_acked)
            produced = pub.total_acked
            await wait_for(lambda: first.quota.reason is not None, 60, "quota reached")
            await wait_for(lambda: first.held > 0, 30, "samples held")
            await asyncio.sleep(2.0)  # retries meet the full quota
            h = gw.health
            assert h.spooled < produced
            assert h.normalised == h.spooled + h.refused + first.held  # exact accounting
            assert h.refused == 0  # MQTT QoS 1 can wait: nothing turned away for good
        finally:
            # Stopped while refusing: whatever it did not spool it never acknowledged, so the
            # broker must hand exactly those to the next run.
            await gw.stop(timeout_s=2)
        spooled_first = gw.health.spooled

        relay.hold.clear()  # InfluxDB back
        gw2 = Gateway(site)
        await gw2.start()
        try:
            await wait_for(
                lambda: gw2.health.delivered["influxdb"] >= produced, 120, "all delivered"
            )
        finally:
            await gw2.stop(timeout_s=10)

    series = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert series == {m: expected_stats(PER_MACHINE) for m in pub.machines}  # 0 lost
    # each sample went through exactly once: the first run's unacknowledged ones came back
    # from the broker, the acknowledged ones did not
    assert spooled_first + gw2.health.received == produced
    assert gw2.health.delivered["influxdb"] == produced
    assert gw2.health.refused == 0 and gw2.pipeline is not None and gw2.pipeline.held == 0
