"""A background task that fails is logged, counted and restarted; one that keeps failing
makes the gateway ask to be restarted (``Gateway.failed``, a distinct exit status)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import MAX_TASK_FAILURES, Gateway
from microfactory.gateway.sample import Sample
from microfactory.gateway.spool import SpooledSample
from tests.helpers.gateway import influx_total
from tests.helpers.servers import InfluxDB1
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration


def _site(tmp_path: Path, influx_url: str) -> dict[str, object]:
    return {
        "site": "faults",
        "machines": [{"id": "m1"}],
        "adapters": [],
        "local_history": {"enabled": False},
        "spool": {"path": str(tmp_path / "spool.sqlite"), "durability": "normal"},
        "health": {"enabled": False},
        "influxdb": {"api": "v1", "url": influx_url, "database": "sup", "timeout_s": 5},
    }


async def test_a_failed_delivery_is_restarted_and_counted(
    tmp_path: Path, influxdb1: InfluxDB1, caplog: pytest.LogCaptureFixture
) -> None:
    gw = Gateway(parse_site_config(_site(tmp_path, influxdb1.url), "sup"))
    await gw.start()
    try:
        real_read = gw.spool.read
        failures = [0]

        async def read_failing_once(sink: str, limit: int) -> list[SpooledSample]:
            if failures[0] == 0:
                failures[0] += 1
                raise RuntimeError("injected bug")
            return await real_read(sink, limit)

        gw.spool.read = read_failing_once  # type: ignore[method-assign]
        await wait_for(lambda: gw.health.task_failures["sink:influxdb"] == 1, 10, "a failure")
        await gw.spool.append([Sample("m1", "power_active", 1.0, "W", 10**18, "good", {})])
        gw.deliveries[0].notify()
        await wait_for(lambda: influx_total(influxdb1, "sup") == 1, 20, "delivered after restart")
        beat = gw.health.beats["sink:influxdb"]
        await wait_for(lambda: gw.health.beats["sink:influxdb"] > beat, 5, "it shows life")
        assert not gw.failed.is_set()
    finally:
        await gw.stop()
    lines = [r for r in caplog.records if "task sink:influxdb failed" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.ERROR and lines[0].exc_info


async def test_a_task_that_keeps_failing_asks_for_a_restart(
    tmp_path: Path, influxdb1: InfluxDB1
) -> None:
    gw = Gateway(parse_site_config(_site(tmp_path, influxdb1.url), "sup"))
    await gw.start()
    try:

        async def read_broken(sink: str, limit: int) -> list[SpooledSample]:
            raise RuntimeError("injected bug, for good")

        gw.spool.read = read_broken  # type: ignore[method-assign]
        await wait_for(gw.failed.is_set, 30, "the gateway gives up")
        assert gw.health.task_failures["sink:influxdb"] == MAX_TASK_FAILURES
        assert gw.failure is not None and "sink:influxdb" in gw.failure
    finally:
        await gw.stop()
