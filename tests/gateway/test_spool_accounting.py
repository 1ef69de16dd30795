"""The spool's books balance: delivered + dropped + still spooled = appended, per sink,
also when the quota drops samples a sink is writing at that very moment."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

import pytest

from microfactory.gateway.config import SpoolSettings
from microfactory.gateway.sample import Sample
from microfactory.gateway.spool import Spool, SpoolFull

Overflow = Literal["drop_oldest", "stop_accepting"]


def _samples(start: int, n: int) -> list[Sample]:
    t0 = time.time_ns()
    return [Sample("m1", "power_active", float(i), "W", t0 + i) for i in range(start, start + n)]


async def test_quota_drop_of_a_batch_in_flight_is_counted_once(tmp_path: Path) -> None:
    spool = Spool(SpoolSettings(path=tmp_path / "s.sqlite", max_bytes=1 << 20), ["a", "b"])
    await spool.open()
    try:
        await spool.append(_samples(0, 2000))
        batch = await spool.read("a", 2000)  # sink a is writing these ...
        assert len(batch) == 2000
        appended = 2000
        for _ in range(20):  # ... while a long outage of b pushes the spool over its quota
            await spool.append(_samples(appended, 2000))
            appended += 2000
        stats = await spool.stats()
        assert stats.dropped["a"] > 2000 and stats.dropped["b"] > 2000
        await spool.ack("a", batch[-1].seq, delivered=len(batch))  # ... and the write succeeded
        stats = await spool.stats()
        for sink in ("a", "b"):
            books = stats.delivered[sink] + stats.dropped[sink] + stats.depth[sink]
            assert books == appended == stats.appended, (sink, stats)
        assert stats.delivered["a"] == 2000
        assert stats.bytes <= (1 << 20) * 1.06
    finally:
        await spool.close()


async def test_stop_accepting_takes_what_fits_and_counts_the_rest(tmp_path: Path) -> None:
    settings = SpoolSettings(
        path=tmp_path / "s.sqlite", max_bytes=1 << 20, overflow="stop_accepting"
    )
    spool = Spool(settings, ["a"])
    await spool.open()
    accepted = refused = 0
    try:
        for i in range(40):
            try:
                await spool.append(_samples(i * 2000, 2000))
                accepted += 2000
            except SpoolFull as err:
                accepted += err.accepted
                refused += 2000 - err.accepted
        stats = await spool.stats()
        assert refused > 0 and stats.refused == refused
        assert stats.appended == accepted == stats.depth["a"]
        assert stats.dropped["a"] == 0
        assert stats.bytes <= (1 << 20) * 1.06
        # once the sink has taken the backlog, new samples are accepted again
        while batch := await spool.read("a", 5000):
            await spool.ack("a", batch[-1].seq, delivered=len(batch))
        await spool.append(_samples(10**6, 10))
        assert (await spool.stats()).appended == accepted + 10
    finally:
        await spool.close()


@pytest.mark.parametrize("overflow", ["drop_oldest", "stop_accepting"])
async def test_counters_survive_a_restart(tmp_path: Path, overflow: Overflow) -> None:
    settings = SpoolSettings(path=tmp_path / "s.sqlite", overflow=overflow)
    spool = Spool(settings, ["a"])
    await spool.open()
    await spool.append(_samples(0, 100))
    batch = await spool.read("a", 60)
    await spool.ack("a", batch[-1].seq, delivered=59, quarantined=[("bad", "line")])
    await spool.close()
    spool = Spool(settings, ["a"])
    await spool.open()
    stats = await spool.stats()
    await spool.close()
    assert (stats.appended, stats.delivered["a"], stats.quarantined["a"], stats.depth["a"]) == (
        100,
        59,
        1,
        40,
    )
