"""The gateway as a real process: killed with SIGKILL mid-batch, and stopped with SIGTERM."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.gateway import (
    GatewayProcess,
    Publisher,
    expected_stats,
    influx_stats,
    influx_total,
    site_dict,
    spool_depth,
    wait_flowing,
    write_config,
)
from tests.helpers.markers import starts_server
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for_sync

pytestmark = pytest.mark.faults


@pytest.fixture
@starts_server("gateway subprocesses")
def gateways() -> Iterator[list[GatewayProcess]]:
    made: list[GatewayProcess] = []
    yield made
    for g in made:
        g.close()


def test_sigkill_mid_batch_loses_no_acknowledged_sample(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
    gateways: list[GatewayProcess],
) -> None:
    data = site_dict(
        tmp_path,
        big_queue_mosquitto.url,
        prefix=prefix,
        influx_url=influxdb1.url,
        batch_size=2000,
        spool={"durability": "full"},
    )
    config = write_config(tmp_path / "site.yaml", data)
    gw = GatewayProcess(config, tmp_path / "gateway.log")
    gateways.append(gw)
    gw.start()
    pub = publisher_factory(big_queue_mosquitto.url, prefix)
    pub.wait_connected()
    wait_flowing(pub, influxdb1, "faults")

    pub.start(rate_per_s=3000)
    wait_for_sync(lambda: influx_total(influxdb1, "faults") >= 3000, 30, "first deliveries")
    gw.kill()  # samples are arriving, being spooled and written all the time: mid-batch
    killed_at = influx_total(influxdb1, "faults")
    time.sleep(1.0)  # machines keep publishing; the broker queues for the gateway's session
    gw.start()
    time.sleep(1.5)
    pub.stop_publishing()
    pub.wait_all_acked()
    produced = pub.total_acked
    assert produced == pub.total_sent and produced > killed_at

    wait_for_sync(
        lambda: influx_total(influxdb1, "faults") >= produced, 60, f"{produced} in InfluxDB"
    )
    # duplicates overwrite (same series and timestamp): exactly what was produced is there
    stats = influx_stats(influxdb1, "faults")
    assert stats == {m: expected_stats(pub.sent[m]) for m in pub.machines}
    assert gw.terminate(timeout_s=20) == 0
    depth, counters = spool_depth(tmp_path / "spool.sqlite")
    assert depth == 0
    # the restarted gateway counts on from the spool's durable counters: across the kill,
    # every sample was delivered (a replayed batch may be counted twice, never lost)
    delivered = counters.get("delivered:influxdb", 0)
    assert delivered >= produced, counters
    assert not any(k.startswith("dropped:") for k in counters), counters
    assert "Traceback" not in gw.log_text()


def test_sigterm_exits_0_with_everything_flushed_or_durable(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
    gateways: list[GatewayProcess],
) -> None:
    data = site_dict(tmp_path, big_queue_mosquitto.url, prefix=prefix, influx_url=influxdb1.url)
    config = write_config(tmp_path / "site.yaml", data)
    gw = GatewayProcess(config, tmp_path / "gateway.log", stop_timeout_s=2)
    gateways.append(gw)
    gw.start()
    pub = publisher_factory(big_queue_mosquitto.url, prefix)
    pub.wait_connected()
    wait_flowing(pub, influxdb1, "faults")

    # 1. InfluxDB up: SIGTERM under load flushes the spool and exits 0
    pub.start(rate_per_s=2000)
    wait_for_sync(lambda: influx_total(influxdb1, "faults") >= 2000, 30, "first deliveries")
    t0 = time.monotonic()
    assert gw.terminate(timeout_s=15) == 0
    assert time.monotonic() - t0 < 2 + 8, "stop took longer than its timeout allows"
    depth, counters = spool_depth(tmp_path / "spool.sqlite")
    assert depth == 0, "SIGTERM with a live sink must flush everything"
    probes = influx_total(influxdb1, "faults", "temperature")
    assert influx_total(influxdb1, "faults") + probes == counters["appended"]

    # 2. InfluxDB down: SIGTERM still exits 0 within the timeout, the backlog stays on disk
    influxdb1.stop()
    gw.start()
    time.sleep(2.0)
    t0 = time.monotonic()
    assert gw.terminate(timeout_s=15) == 0
    assert time.monotonic() - t0 < 2 + 8
    depth, counters = spool_depth(tmp_path / "spool.sqlite")
    assert depth > 0, "samples published meanwhile should wait in the spool"

    # 3. both back: the backlog and what the broker kept are delivered, nothing lost
    influxdb1.start()
    gw.start()
    time.sleep(1.0)
    pub.stop_publishing()
    pub.wait_all_acked()
    produced = pub.total_acked
    wait_for_sync(
        lambda: influx_total(influxdb1, "faults") >= produced, 60, f"{produced} in InfluxDB"
    )
    assert influx_stats(influxdb1, "faults") == {
        m: expected_stats(pub.sent[m]) for m in pub.machines
    }
    assert gw.terminate(timeout_s=15) == 0
    assert "Traceback" not in gw.log_text()
