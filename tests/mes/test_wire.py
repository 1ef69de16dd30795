"""MES <-> gateway over a real Mosquitto: retained context, QoS 1 events on persistent sessions,
idempotent replays, and events kept by the broker while the MES is down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from microfactory import contract
from microfactory.cli.ports import free_port
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.sinks.mes_events.link import MesLink
from microfactory.mes.demo import DemoMes, start_demo_mes
from tests.helpers.mes_wire import mill_cycle, retained
from tests.helpers.servers import Mosquitto

pytestmark = pytest.mark.integration

S = 1_000_000_000
MANAGER = ("manager", "manager")


def _site(mqtt_url: str, tmp: Path) -> Any:
    return parse_site_config(
        {
            "site": "demo",
            "mqtt": {"url": mqtt_url, "client_id": "wire-test-gw"},
            "mes_link": {"publish_timeout_s": 5},
            "spool": {"path": str(tmp / "spool.sqlite")},
            "machines": [{"id": "mill-1", "kind": "cnc_mill"}],
        },
        "wire test",
    )


async def _until(check: Any, what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def _parts(mes: DemoMes) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=mes.api) as api:
        r = await api.get("/parts", params={"machine_id": "mill-1", "limit": 1000}, auth=MANAGER)
        assert r.status_code == 200
        items: list[dict[str, Any]] = r.json()["items"]
        return items


async def test_context_and_events_across_an_mes_outage(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    async def start() -> DemoMes:
        return await start_demo_mes(
            host="127.0.0.1",
            port=free_port(),
            mqtt_url=mosquitto.url,
            site="demo",
            data_dir=tmp_path / "mes",
        )

    mes = await start()
    link = MesLink.from_site(_site(mosquitto.url, tmp_path))
    try:
        # the demo put batches on the machines; their contexts are retained on the broker
        await _until(lambda: mes.runtime.mqtt_status() == "connected", "MES bridge")
        on_wire = await asyncio.to_thread(
            retained, mosquitto.url, contract.context_subscription("demo"), 5, 3.0
        )
        ctx = contract.MachineContext.model_validate_json(
            on_wire[contract.context_topic("demo", "mill-1")]
        )
        assert (ctx.order, ctx.batch, ctx.operation) == ("SO-1001", "SO-1001-01", "20:mill bores")
        assert ctx.operator == "operator"
        await link.open()
        assert link.context["mill-1"] == {
            "order": "SO-1001",
            "batch": "SO-1001-01",
            "operation": "20:mill bores",
            "product": "BRK-100",
        }
        t0 = time.time_ns() - 3600 * S
        await link.write(
            mill_cycle(t0, 0, 100.0) + mill_cycle(t0, 1, 180.0) + mill_cycle(t0, 2, 265.5)
        )
        await _until(lambda: mes.runtime.publisher.ingested >= 2, "two parts ingested")  # type: ignore[attr-defined]
        parts = await _parts(mes)
        # before the run started (the demo started it now): machine parts, no batch
        assert sorted(p["energy_wh"] or 0 for p in parts) == [0, 85.5]

        await mes.stop()  # the MES is down; its persistent session keeps collecting events
        await link.write(mill_cycle(t0, 3, 300.0) + mill_cycle(t0, 4, 390.0))
        mes = await start()
        await _until(lambda: mes.runtime.publisher.ingested >= 2, "queued events after restart")  # type: ignore[attr-defined]
        parts = await _parts(mes)
        assert sorted(p["energy_wh"] or 0 for p in parts) == [0, 34.5, 85.5, 90.0]

        # a gateway that lost its memory replays the same samples: same ids, nothing doubled
        fresh = MesLink.from_site(_site(mosquitto.url, tmp_path / "other"))
        fresh.settings = fresh.settings.model_copy(update={"client_id": "wire-test-gw-2"})
        await fresh.open()
        replay = [s for p in range(5) for s in mill_cycle(t0, p, 100.0 + 70 * p)]
        await fresh.write(replay)
        await fresh.close()
        await _until(lambda: mes.runtime.publisher.duplicates >= 1, "replay seen")  # type: ignore[attr-defined]
        await asyncio.sleep(0.5)
        assert len(await _parts(mes)) == 4
    finally:
        await link.close()
        await mes.stop()
