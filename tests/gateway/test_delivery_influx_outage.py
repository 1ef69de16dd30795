"""InfluxDB 1.x stopped under load, then restarted: nothing lost, order per series kept."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.gateway.sample import Sample
from microfactory.gateway.sinks import SinkContext
from microfactory.gateway.sinks.influxdb.v1 import InfluxV1Sink
from tests.helpers.gateway import (
    SIGNAL,
    Publisher,
    both_connected,
    expected_stats,
    influx_stats,
    influx_total,
    site_dict,
)
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults


class OrderRecordingSink(InfluxV1Sink):
    """The real InfluxDB 1.x sink, noting what each successful write carried, in order."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.written: list[Sample] = []
        self.failures = 0

    async def write(self, samples: list[Sample]) -> None:
        try:
            await super().write(samples)
        except Exception:
            self.failures += 1
            raise
        self.written.extend(samples)


async def test_influxdb_outage_under_load_loses_nothing_and_keeps_order(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    data = site_dict(tmp_path, big_queue_mosquitto.url, prefix=prefix, batch_size=500)
    site = parse_site_config(data, "faults")
    assert site.influxdb is None
    from microfactory.gateway.config import InfluxSettings

    settings = InfluxSettings(api="v1", url=influxdb1.url, database="outage", batch_size=500)
    sink = OrderRecordingSink(settings, SinkContext(site.site, tmp_path, logging.getLogger("test")))
    gw = Gateway(site, extra_sinks=[sink])
    await gw.start()
    pub = publisher_factory(big_queue_mosquitto.url, prefix)
    try:
        await sink.ensure_database()
        await both_connected(gw, pub)
        await asyncio.sleep(0.3)  # the subscription settles on the broker
        pub.start(rate_per_s=2000)
        await wait_for(lambda: gw.health.delivered[sink.name] >= 2000, 30, "first deliveries")

        await asyncio.to_thread(influxdb1.stop)
        before = gw.health.delivered[sink.name]
        await wait_for(lambda: sink.failures >= 3, 30, "the sink noticing the outage")
        # samples keep coming in and are spooled while InfluxDB is down
        spooled_at_stop = gw.health.spooled
        await wait_for(lambda: gw.health.spooled >= spooled_at_stop + 4000, 30, "spooling")
        assert gw.health.delivered[sink.name] == before, "delivered while InfluxDB was down?"
        assert gw.spool.depth(sink.name) >= 4000

        await asyncio.to_thread(influxdb1.start)
        await asyncio.sleep(1.0)  # live load and backlog together for a while
        pub.stop_publishing()
        await asyncio.to_thread(pub.wait_all_acked)
        produced = pub.total_acked
        await wait_for(lambda: gw.health.spooled >= produced, 60, "every sample spooled")
        await wait_for(lambda: gw.spool.depth(sink.name) == 0, 90, "backlog drained")
    finally:
        await gw.stop(timeout_s=30)

    stats = await asyncio.to_thread(influx_stats, influxdb1, "outage")
    for machine in pub.machines:
        assert stats[machine] == expected_stats(pub.sent[machine]), machine
    assert await asyncio.to_thread(influx_total, influxdb1, "outage") == produced
    # exact accounting for the sink: delivered + counted drops = produced
    spool_stats_dropped = gw.health.snapshot()
    assert gw.health.spooled == produced, spool_stats_dropped
    assert gw.health.delivered[sink.name] == produced
    assert not gw.health.dead_lettered and not gw.health.quarantined
    # FIFO per series: each series reached InfluxDB in timestamp order (a batch re-sent
    # after a failure would repeat points, never reorder them)
    seen: dict[tuple[str, str], int] = {}
    for s in sink.written:
        key = (s.machine, s.signal)
        assert s.signal == SIGNAL
        assert s.ts_ns > seen.get(key, -1), f"{key}: {s.ts_ns} delivered after {seen[key]}"
        seen[key] = s.ts_ns
