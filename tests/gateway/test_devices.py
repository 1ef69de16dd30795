"""DeviceWatch: one device behind an adapter goes stale, offline, and comes back with a gap."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from microfactory.gateway.sdk import AdapterContext, DeviceWatch
from microfactory.gateway.testing import RecordingEmitter


class FakeClock:
    def __init__(self) -> None:
        self.now_ns = 1_700_000_000_000_000_000

    def __call__(self) -> int:
        return self.now_ns

    def advance(self, seconds: float) -> None:
        self.now_ns += int(seconds * 1e9)


def _watch(
    tmp_path: Path, stale_after_s: float | None = None
) -> tuple[DeviceWatch, RecordingEmitter, FakeClock]:
    emitter = RecordingEmitter(adapter="bus", machines={"m1", "m2"})
    clock = FakeClock()
    context = AdapterContext(
        site="s",
        machines=frozenset({"m1", "m2"}),
        emitter=emitter,
        logger=logging.getLogger("test.devices"),
        state_dir=tmp_path,
        clock=clock,
    )
    return DeviceWatch(context, "bus", stale_after_s=stale_after_s), emitter, clock


def test_first_sight_is_live_and_silence_makes_it_stale(tmp_path: Path) -> None:
    watch, emitter, clock = _watch(tmp_path, stale_after_s=0.05)
    watch.seen("plug-1", ["m1"])
    assert watch.state("plug-1") == "live"
    assert emitter.device_state("plug-1") == "live"
    watch.check()
    assert watch.state("plug-1") == "live", "not silent long enough yet"
    time.sleep(0.08)
    clock.advance(30)
    watch.check()
    assert watch.state("plug-1") == "stale"
    assert emitter.device_state("plug-1") == "stale"
    watch.check()  # a second check changes nothing and reports nothing
    assert [s for d, s in emitter.devices if d == "plug-1"] == ["live", "stale"]
    assert emitter.gaps == []
    watch.seen("plug-1")
    assert watch.state("plug-1") == "live"
    [gap] = emitter.gaps
    assert gap.machine == "m1"
    assert gap.end_ns - gap.start_ns == 30 * 10**9
    assert "plug-1" in gap.reason and "no data for 30 s" in gap.reason
    assert emitter.violations == []


def test_offline_reports_a_gap_from_the_last_data_to_the_rebirth(tmp_path: Path) -> None:
    watch, emitter, clock = _watch(tmp_path)
    watch.seen("node-a", ["m1", "m2"])
    last = clock()
    clock.advance(5)
    watch.offline("node-a", "NDEATH (bdSeq 3)")
    watch.offline("node-a", "NDEATH again")  # already offline: no second report
    assert watch.state("node-a") == "offline"
    assert [s for d, s in emitter.devices] == ["live", "offline"]
    clock.advance(60)
    watch.seen("node-a")
    gaps = sorted(emitter.gaps, key=lambda g: g.machine)
    assert [g.machine for g in gaps] == ["m1", "m2"]
    assert all(g.start_ns == last and g.end_ns == clock() for g in gaps)
    assert all("offline: NDEATH (bdSeq 3)" in g.reason for g in gaps)
    assert emitter.violations == []


def test_offline_since_an_earlier_instant_widens_the_gap(tmp_path: Path) -> None:
    watch, emitter, clock = _watch(tmp_path)
    watch.seen("n", ["m1"])
    before = clock() - 10 * 10**9
    watch.offline("n", "last will", since_ns=before)
    clock.advance(1)
    watch.seen("n")
    [gap] = emitter.gaps
    assert gap.start_ns == before


def test_a_device_without_a_limit_never_goes_stale(tmp_path: Path) -> None:
    watch, _, _ = _watch(tmp_path)
    watch.seen("quiet", ["m1"])
    time.sleep(0.02)
    watch.check()
    assert watch.state("quiet") == "live"
    watch.seen("fast", ["m2"], stale_after_s=0.01)
    time.sleep(0.03)
    watch.check()
    assert watch.states == {"quiet": "live", "fast": "stale"}


async def test_run_checks_in_the_background_and_stops_when_cancelled(tmp_path: Path) -> None:
    watch, _, _ = _watch(tmp_path, stale_after_s=0.1)
    watch.seen("d", ["m1"])
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(100):  # bounded: at most 2 s
            if watch.state("d") == "stale":
                break
            await asyncio.sleep(0.02)
        assert watch.state("d") == "stale"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_a_non_positive_limit_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="stale_after_s"):
        _watch(tmp_path, stale_after_s=0)


def test_metrics_and_status_show_devices_that_are_not_live(tmp_path: Path) -> None:
    from io import StringIO

    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from rich.console import Console

    from microfactory.gateway.health import Health
    from microfactory.gateway.metrics import PREFIX, GatewayCollector
    from microfactory.gateway.status import Values, render

    health = Health()
    health.devices[("shop-mqtt", "plug-1")] = "stale"
    health.devices[("shop-mqtt", "plug-2")] = "live"
    health.devices[("spb", "node-a")] = "offline"
    registry = CollectorRegistry()
    registry.register(GatewayCollector(health, tmp_path / "none.sqlite", [], lambda _: 0))
    values: Values = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            name = sample.name.removeprefix(PREFIX + "_")
            values.setdefault(name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    states = {(dict(k)["device"], dict(k)["state"]) for k, v in values["device_state"].items() if v}
    assert states == {("plug-1", "stale"), ("plug-2", "live"), ("node-a", "offline")}
    out = StringIO()
    render(values, Console(file=out, width=120))
    text = out.getvalue()
    assert "devices not live" in text
    assert "plug-1" in text and "node-a" in text and "plug-2" not in text


def test_a_paused_watch_lets_no_device_go_stale_and_resume_restarts_the_clock(
    tmp_path: Path,
) -> None:
    watch, emitter, _ = _watch(tmp_path, stale_after_s=0.03)
    watch.seen("plug-1", ["m1"])
    watch.pause()  # the broker is away: the connection's gap covers the silence
    time.sleep(0.05)
    watch.check()
    assert watch.state("plug-1") == "live"
    watch.resume()
    watch.check()
    assert watch.state("plug-1") == "live", "silence counts from the reconnect"
    time.sleep(0.05)
    watch.check()
    assert watch.state("plug-1") == "stale"
    assert emitter.gaps == []


def test_offline_first_takes_its_own_limit(tmp_path: Path) -> None:
    watch, _, _ = _watch(tmp_path, stale_after_s=100)
    watch.offline("plug-9", "retained 'Offline'", ["m2"], stale_after_s=0.01)
    watch.seen("plug-9")
    time.sleep(0.03)
    watch.check()
    assert watch.state("plug-9") == "stale"
