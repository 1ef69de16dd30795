"""A gateway that was not running saw nothing: on start it reports that time as a gap."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway


def _site(tmp_path: Path) -> dict[str, object]:
    return {
        "site": "shop",
        "machines": [{"id": "mill-1"}, {"id": "laser-1"}],
        "spool": {"path": str(tmp_path / "spool.sqlite")},
        "local_history": {"path": str(tmp_path / "history.sqlite")},
        "health": {"enabled": False},
    }


async def _start_stop(tmp_path: Path) -> Gateway:
    gw = Gateway(parse_site_config(_site(tmp_path)))
    await gw.start()
    await gw.stop(timeout_s=10)
    return gw


def _gaps(tmp_path: Path) -> list[tuple[str, int, str]]:
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        return list(
            db.execute(
                "SELECT machine, ts_ns, text FROM telemetry WHERE signal = 'gap' ORDER BY machine"
            )
        )


def test_first_start_reports_no_gap(tmp_path: Path) -> None:
    gw = asyncio.run(_start_stop(tmp_path))
    assert gw.health.gaps == 0
    assert _gaps(tmp_path) == []


def test_restart_after_downtime_reports_it_on_every_machine(tmp_path: Path) -> None:
    asyncio.run(_start_stop(tmp_path))
    # the gateway was down for an hour: move its last heartbeat back, as the clock would have
    hour_ago = time.time_ns() - 3600 * 10**9
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        db.execute("UPDATE heartbeat SET alive_ns = ?", (hour_ago,))
    before = time.time_ns()
    gw = asyncio.run(_start_stop(tmp_path))
    assert gw.health.gaps == 2
    gaps = _gaps(tmp_path)
    assert [m for m, _, _ in gaps] == ["laser-1", "mill-1"]
    for _, ts_ns, text in gaps:
        assert ts_ns >= before  # the gap ends when the gateway came back
        assert text == f"gateway was not running (from {hour_ago})"


def test_quick_restart_is_not_a_gap(tmp_path: Path) -> None:
    asyncio.run(_start_stop(tmp_path))
    gw = asyncio.run(_start_stop(tmp_path))  # the clean stop wrote its heartbeat just now
    assert gw.health.gaps == 0
