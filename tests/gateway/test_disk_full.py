"""The spool's disk fills up, then frees: the gateway says so, holds back, and loses nothing.

The spool lives on a small tmpfs of its own; a filler file takes every free byte. Real
Mosquitto (QoS 1, a queue big enough for the test) and real InfluxDB 1.x, behind a relay
that can answer 503 so the spool grows during an "outage" the way it does in the field.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.gateway import (
    Publisher,
    both_connected,
    expected_stats,
    influx_stats,
    influx_total,
    site_dict,
    wait_flowing,
)
from tests.helpers.overloaded_influx import OverloadedInflux
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults

DISK_LOG = "microfactory.gateway.pipeline"


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``where`` (we run as root), always unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a filler file until the disk refuses one more byte; return its path."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (1 << 20, 1 << 16, 1 << 12, 512, 1):
            block = b"\0" * chunk
            while True:
                try:
                    os.write(fd, block)
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return filler


def disk_lines(caplog: pytest.LogCaptureFixture) -> tuple[list[str], list[str]]:
    """(lines saying the disk failed, lines saying it cleared)."""
    mine = [r for r in caplog.records if r.name == DISK_LOG and "spool disk" in r.getMessage()]
    failed = [r.getMessage() for r in mine if r.levelno == logging.ERROR]
    cleared = [r.getMessage() for r in mine if "cleared" in r.getMessage()]
    return failed, cleared


async def test_disk_fills_and_frees_nothing_lost(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="microfactory")
    with small_disk(tmp_path / "disk", "6m") as disk, OverloadedInflux(influxdb1.url) as relay:
        data = site_dict(
            disk, big_queue_mosquitto.url, prefix=prefix, influx_url=relay.url, batch_size=1000
        )
        gw = Gateway(parse_site_config(data, "faults"))
        await gw.start()
        pub = publisher_factory(big_queue_mosquitto.url, prefix)
        try:
            await both_connected(gw, pub)
            await asyncio.to_thread(wait_flowing, pub, influxdb1, "faults")
            pub.start(rate_per_s=1000)
            relay.hold.set()  # InfluxDB "down": the spool grows, as in a long outage
            await asyncio.sleep(1.0)
            filler = await asyncio.to_thread(fill, disk)
            await wait_for(lambda: gw.health.spool_disk_error is not None, 60, "disk error")
            reason = gw.health.spool_disk_error
            assert reason is not None and "disk full" in reason and str(disk) in reason
            held_at_error = gw.pipeline.held if gw.pipeline else 0
            await asyncio.sleep(2.0)  # machines keep publishing onto a full disk

            # InfluxDB back while the disk is still full: what is on disk drains
            delivered_before = gw.health.delivered["influxdb"]
            relay.hold.clear()
            await wait_for(
                lambda: gw.health.delivered["influxdb"] > delivered_before + 1000,
                60,
                "deliveries from a full disk",
            )
            assert gw.health.spool_disk_error is not None  # still full: the state holds

            filler.unlink()
            freed = time.monotonic()
            await wait_for(lambda: gw.health.spool_disk_error is None, 60, "disk error cleared")
            recover_s = time.monotonic() - freed
            await asyncio.sleep(1.0)
            pub.stop_publishing()
            await asyncio.to_thread(pub.wait_all_acked)
            produced = pub.total_acked
            assert produced == pub.total_sent
            await wait_for(
                lambda: influx_total(influxdb1, "faults") >= produced, 90, "all in InfluxDB"
            )
            await wait_for(lambda: gw.spool.depth("influxdb") == 0, 30, "spool drained")
        finally:
            await gw.stop(timeout_s=10)

    h = gw.health
    series = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    # every published sample exactly once in InfluxDB, none missing
    assert series == {m: expected_stats(pub.sent[m]) for m in pub.machines}
    # and exactly once through the gateway: no redelivery, no second write of a sample
    assert h.received == produced + pub.extra
    assert h.spooled == h.received and h.refused == 0
    assert h.delivered["influxdb"] == h.spooled
    assert h.task_failures == {}
    failed, cleared = disk_lines(caplog)
    assert len(failed) == 1 and "disk full" in failed[0], failed
    assert len(cleared) == 1, cleared
    print(  # the figures for the lead's note (pytest -s)
        f"\nDISK-FULL published={produced} stored={sum(s.count for s in series.values())} "
        f"lost=0 duplicated=0 held_at_error={held_at_error} recover_after_free_s={recover_s:.2f}"
        f" | {cleared[0]}"
    )


async def test_starts_on_a_full_disk_and_recovers(
    tmp_path: Path,
    big_queue_mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="microfactory")
    per_machine = 500
    with small_disk(tmp_path / "disk", "2m") as disk:
        filler = fill(disk)
        data = site_dict(disk, big_queue_mosquitto.url, prefix=prefix, influx_url=influxdb1.url)
        gw = Gateway(parse_site_config(data, "faults"))
        await gw.start()  # must not crash (its heartbeat used to)
        pub = publisher_factory(big_queue_mosquitto.url, prefix)
        try:
            reason = gw.health.spool_disk_error
            assert reason is not None and str(disk) in reason
            await both_connected(gw, pub)
            pub.publish(per_machine)
            await asyncio.to_thread(pub.wait_all_acked)
            await asyncio.sleep(3.0)  # heartbeats and retries meet the full disk
            assert gw.health.spool_disk_error is not None
            assert gw.health.spooled == 0 and influx_total(influxdb1, "faults") == 0
            filler.unlink()
            await wait_for(lambda: gw.health.spool_disk_error is None, 60, "disk error cleared")
            produced = pub.total_acked
            await wait_for(
                lambda: influx_total(influxdb1, "faults") >= produced, 60, "all in InfluxDB"
            )
        finally:
            await gw.stop(timeout_s=10)
    series = await asyncio.to_thread(influx_stats, influxdb1, "faults")
    assert series == {m: expected_stats(per_machine) for m in pub.machines}
    assert gw.health.received == produced and gw.health.refused == 0
    assert gw.health.task_failures == {}
    failed, cleared = disk_lines(caplog)
    assert len(failed) == 1 and len(cleared) == 1, (failed, cleared)
