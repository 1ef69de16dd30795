"""``/healthz`` of a real gateway: ok, then down with named reasons (spool disk, free space)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from microfactory.cli.ports import free_port
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.healthz import Thresholds
from microfactory.gateway.runtime import Gateway
from tests.gateway.test_sd_notify import _get


async def test_healthz_names_each_reason(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: the InfluxDB sink fails
    data = {
        "site": "hz",
        "machines": [{"id": "m1"}],
        "influxdb": {"api": "v1", "url": dead, "database": "hz", "timeout_s": 1},
        "spool": {"path": str(tmp_path / "spool.sqlite"), "durability": "normal"},
        "health": {"port": 0},
    }
    gw = Gateway(parse_site_config(data, "hz"))
    await gw.start()
    try:
        assert gw.metrics is not None
        url = gw.metrics.url.removesuffix("/metrics") + "/healthz"
        code, body = await asyncio.to_thread(_get, url)
        assert code == 200 and isinstance(body, dict) and body["status"] == "ok", body
        gw.check.thresholds = Thresholds(disk_min_bytes=1 << 62)  # every disk is "low" now
        gw.health.spool_disk_error = "disk full: no space left on device"
        code, body = await asyncio.to_thread(_get, url)
        assert code == 503 and isinstance(body, dict) and body["status"] == "down"
        names = {r["name"]: r for r in body["reasons"]}
        assert {"spool_disk_full", "disk_low"} <= set(names), body
        assert names["spool_disk_full"]["since"] > 0 and "MiB free" in names["disk_low"]["detail"]
        gw.health.spool_disk_error = None
        code, body = await asyncio.to_thread(_get, url)
        assert isinstance(body, dict)
        assert "spool_disk_full" not in [r["name"] for r in body["reasons"]]
    finally:
        await gw.stop(timeout_s=1)


async def test_healthz_names_a_dead_broker_a_dead_sink_and_an_old_backlog(tmp_path: Path) -> None:
    from microfactory.gateway.sample import RawSample
    from tests.helpers.waiting import wait_for

    dead_influx = f"http://127.0.0.1:{free_port()}"
    dead_broker = f"mqtt://127.0.0.1:{free_port()}"
    data = {
        "site": "hz",
        "mqtt": {"url": dead_broker, "client_id": "hz-gw"},
        "machines": [{"id": "m1"}],
        "adapters": [
            {
                "type": "mqtt",
                "name": "mqtt-in",
                "subscriptions": [{"topic": "hz/{machine}/{signal}", "value": {"path": "v"}}],
            }
        ],
        "influxdb": {"api": "v1", "url": dead_influx, "database": "hz", "timeout_s": 1},
        "local_history": {"enabled": False},
        "spool": {"path": str(tmp_path / "spool.sqlite"), "durability": "normal"},
        "health": {"port": 0},
    }
    gw = Gateway(parse_site_config(data, "hz"))
    await gw.start()
    try:
        assert gw.metrics is not None and gw.pipeline is not None
        gw.check.thresholds = Thresholds(sink_down_s=0, adapter_down_s=0, spool_age_ratio=1e-9)
        url = gw.metrics.url.removesuffix("/metrics") + "/healthz"
        gw.pipeline.submit([RawSample("m1", "power", 5.0, "W", None, "good", "test")])
        await wait_for(lambda: "influxdb" in gw.health.sink_errors, 15, "the write failed")
        code, body = await asyncio.to_thread(_get, url)
        assert code == 503 and isinstance(body, dict), body
        names = {r["name"] for r in body["reasons"]}
        assert {"adapter_down", "sink_down", "spool_age"} <= names, body
        assert body["sinks"]["influxdb"] == "down" and body["adapters"]["mqtt-in"] != "connected"
    finally:
        await gw.stop(timeout_s=1)
