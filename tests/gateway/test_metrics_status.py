"""``/metrics`` and ``microfactory status`` against a running gateway with a sink down."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.gateway.status import fetch
from tests.helpers.gateway import Publisher, both_connected, site_dict
from tests.helpers.overloaded_influx import OverloadedInflux
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults


async def test_metrics_and_status_show_every_stage(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    prefix: str,
    publisher_factory: type[Publisher],
) -> None:
    with OverloadedInflux(influxdb1.url) as server:
        data = site_dict(tmp_path, mosquitto.url, prefix=prefix, influx_url=server.url)
        data["local_history"] = {"enabled": True, "path": str(tmp_path / "history.sqlite")}
        gw = Gateway(parse_site_config(data, "faults"))
        await gw.start()
        pub = publisher_factory(mosquitto.url, prefix)
        try:
            assert gw.metrics is not None and gw.metrics.port > 0
            url = gw.metrics.url
            await both_connected(gw, pub)
            await asyncio.sleep(0.3)
            pub.publish(100)
            pub.publish_raw(f"{prefix}/m1/power_active", b"not json")
            await asyncio.to_thread(pub.wait_all_acked)
            await wait_for(lambda: gw.health.spooled == 400, 30, "spooled")
            await wait_for(lambda: gw.spool.depth("influxdb") == 0, 30, "delivered")
            server.hold.set()  # InfluxDB refuses from now on: a backlog builds up
            pub.publish(50)
            await wait_for(lambda: gw.spool.depth("influxdb") == 200, 30, "backlog")
            await wait_for(lambda: gw.spool.depth("local_history") == 0, 30, "history")
            await wait_for(lambda: gw.health.retried["influxdb"] >= 1, 30, "a retry")
            values = await asyncio.to_thread(fetch, url)
            status = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "microfactory.cli", "status", "--url", url],
                capture_output=True,
                text=True,
                timeout=60,
                env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
            )
        finally:
            await gw.stop(timeout_s=2)

    def one(name: str, **labels: str) -> float:
        return values[name][tuple(sorted(labels.items()))]

    assert one("received") == 600 and one("normalised") == 600 and one("spooled") == 600
    assert one("dead_lettered", source="mqtt-in") == 1
    assert one("delivered", sink="influxdb") == 400
    assert one("delivered", sink="local_history") == 600
    assert one("spool_depth", sink="influxdb") == 200
    assert one("spool_depth", sink="local_history") == 0
    assert one("spool_oldest_age_seconds", sink="influxdb") > 0
    assert one("spool_oldest_age_seconds", sink="local_history") == 0
    assert one("retried", sink="influxdb") >= 1
    assert one("sink_up", sink="influxdb") == 0 and one("sink_up", sink="local_history") == 1
    assert one("dropped", sink="influxdb", reason="quota") == 0
    assert one("quarantined", sink="influxdb") == 0
    assert one("adapter_connected", adapter="mqtt-in") == 1
    assert one("adapter_state", adapter="mqtt-in", state="connected") == 1
    assert one("spool_rows") >= 200 and one("spool_bytes") > 0

    assert status.returncode == 0, status.stderr
    out = status.stdout
    for text in ("influxdb", "local_history", "mqtt-in", "connected", "600", "200"):
        assert text in out, f"{text!r} missing from:\n{out}"
