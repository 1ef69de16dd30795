"""Dead letters and quarantined points are pruned to their age and row limits, and counted."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path

import pytest

from microfactory.gateway.config import SpoolSettings
from microfactory.gateway.sample import Sample
from microfactory.gateway.spool import Spool


async def test_dead_letters_pruned_to_the_cap_newest_kept(tmp_path: Path) -> None:
    path = tmp_path / "spool.sqlite"
    spool = Spool(SpoolSettings(path=path, dead_letters_max_rows=100), ["a"])
    await spool.open()
    try:
        for i in range(250):
            await spool.dead_letter("mqtt-in", f"topic/{i}", "bad payload", b"x")
        assert await spool.prune() == {"dead_letters": 150}
        assert await spool.prune() == {}  # nothing more to do
        stats = await spool.stats()
        assert stats.pruned == {"dead_letters": 150}
    finally:
        await spool.close()
    with sqlite3.connect(path) as db:
        origins = [r[0] for r in db.execute("SELECT origin FROM dead_letters ORDER BY id")]
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    assert origins == [f"topic/{i}" for i in range(150, 250)]  # the newest 100
    assert counters["pruned:dead_letters"] == 150  # durable


async def test_quarantine_pruned_by_age(tmp_path: Path) -> None:
    settings = SpoolSettings(path=tmp_path / "spool.sqlite", quarantine_max_age_s=0.2)
    spool = Spool(settings, ["a"])
    await spool.open()
    try:
        await spool.append([Sample("m1", "s", 1.0, "W", 1, "good", {})])
        batch = await spool.read("a", 10)
        await spool.ack("a", batch[-1].seq, quarantined=[("bad", "line 1"), ("bad", "line 2")])
        assert await spool.prune() == {}  # young enough
        await asyncio.sleep(0.3)
        assert await spool.prune() == {"quarantine": 2}
        assert (await spool.stats()).pruned == {"quarantine": 2}
    finally:
        await spool.close()


async def test_drop_oldest_drops_are_logged_rate_limited(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="microfactory.gateway.spool")
    settings = SpoolSettings(path=tmp_path / "spool.sqlite", max_bytes=1 << 20)
    spool = Spool(settings, ["a"])  # sink "a" never reads: the quota must drop
    await spool.open()
    try:
        for i in range(30):
            await spool.append(
                [Sample("m1", "s", float(j), "W", i * 2000 + j, "good", {}) for j in range(2000)]
            )
        dropped = (await spool.stats()).dropped["a"]
    finally:
        await spool.close()  # tells what was counted since the last line
    lines = [r.getMessage() for r in caplog.records if "dropped from the spool" in r.getMessage()]
    assert dropped > 0
    assert len(lines) == 2, lines  # the first drop at once, the rest summed at most once a minute
    assert sum(int(line.split()[0]) for line in lines) == dropped
