"""The workshop's ground truth: reproducible from the seed, and consistent with itself.

One module-wide run of three workshops (two with the same seed, one paused first and ticking
at another rate; one with a different seed) feeds every test here, so the slow part — asyncua
building its standard address space, about a second per OPC UA server — is paid once.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import defaultdict
from dataclasses import dataclass

import pytest

from microfactory.sim.machines import ASSEMBLY, PRINTER
from microfactory.sim.truth import GroundTruth, PartRecord, load_truth
from microfactory.sim.workshop import Workshop
from tests.helpers.markers import starts_server

from .util import S, by_machine_sorted, parts_until, run_for, settings, states_until

PRODUCERS = ("mill-1", "laser-1", "printer-1", "assembly-1")
pytestmark = pytest.mark.integration  # every test reads the runs of real OPC UA servers

LOSS_PER_HOUR = 2.0  # power losses per machine and simulated hour: resets must show up


@dataclass(frozen=True)
class Runs:
    a: GroundTruth
    b: GroundTruth  # same seed as a, paused 0.4 s first, another tick rate
    c: GroundTruth  # another seed (MQTT machines only, no broker: the truth is still written)
    end_ns: int  # what a and b both reached


@pytest.fixture(scope="module")
@starts_server("three simulated workshops (OPC UA servers)")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    root = tmp_path_factory.mktemp("truth")
    a = Workshop(settings(root / "a", seed=11, power_loss_probability=LOSS_PER_HOUR))
    b = Workshop(settings(root / "b", seed=11, power_loss_probability=LOSS_PER_HOUR, tick_s=0.13))
    c = Workshop(settings(root / "c", seed=12), specs=(PRINTER, ASSEMBLY))

    async def main() -> None:
        await asyncio.gather(run_for(a, 1.5), run_for(b, 1.5, pause_s=0.4), run_for(c, 1.5))

    asyncio.run(main())
    ta, tb, tc = (load_truth(root / d) for d in "abc")
    return Runs(ta, tb, tc, min(ta.summary["end_ns"], tb.summary["end_ns"]))


# ---------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_parts(runs: Runs) -> None:
    start = runs.a.summary["start_ns"]
    assert runs.end_ns - start > 3600 * S, "the runs were too short to compare (slow machine?)"
    pa = by_machine_sorted(parts_until(runs.a, runs.end_ns))
    pb = by_machine_sorted(parts_until(runs.b, runs.end_ns))
    assert len(pa) > 50, f"only {len(pa)} parts in the compared window"
    assert pa == pb, "same seed and origin must give the same parts (times, good/scrap, energy)"


def test_same_seed_gives_identical_states_and_part_counters(runs: Runs) -> None:
    def states(t: GroundTruth) -> list[tuple[str, int, str]]:
        rows = [(s.machine, s.ts_ns, s.state) for s in states_until(t, runs.end_ns)]
        return sorted(rows, key=lambda r: r[:2])  # stable: keeps same-instant order

    assert states(runs.a) == states(runs.b), "same seed must give the same state changes"

    def part_counts(t: GroundTruth) -> list[tuple[str, int, float]]:
        rows = [p for p in t.published if p.signal == "part_count" and p.ts_ns <= runs.end_ns]
        return sorted((p.machine, p.ts_ns, p.value) for p in rows)

    assert part_counts(runs.a) == part_counts(runs.b), (
        "the OPC UA part counters are written at part instants and must be reproducible"
    )


def test_another_seed_gives_another_run(runs: Runs) -> None:
    a = [(p.machine, p.end_ns - runs.a.summary["start_ns"]) for p in runs.a.parts_of("printer-1")]
    c = [(p.machine, p.end_ns - runs.c.summary["start_ns"]) for p in runs.c.parts_of("printer-1")]
    assert a and c and a != c


# ---------------------------------------------------------------------- consistency
def _restores(t: GroundTruth, machine: str) -> list[int]:
    return [s.ts_ns for s in t.states_of(machine) if s.previous == "off"]


@pytest.mark.parametrize("machine", PRODUCERS)
def test_part_counters_step_by_one_and_match_the_summary(runs: Runs, machine: str) -> None:
    parts = runs.a.parts_of(machine)
    assert parts, f"{machine} made no part"
    assert [p.part_count for p in parts] == list(range(1, len(parts) + 1)), (
        f"{machine}: part counter must increment by exactly one per part"
    )
    summary = runs.a.summary["machines"][machine]
    assert summary["part_count"] == len(parts)
    assert summary["good_count"] == sum(p.good for p in parts)
    assert summary["scrap_count"] == sum(not p.good for p in parts)
    assert summary["resets"] == len(_restores(runs.a, machine))
    for p in parts:
        assert p.window_start_ns <= p.start_ns < p.end_ns
        assert p.cycle_time_s == pytest.approx((p.end_ns - p.start_ns) / S)
        assert p.energy_wh > 0


@pytest.mark.parametrize("machine", PRODUCERS)
def test_part_energy_is_the_energy_counter_delta(runs: Runs, machine: str) -> None:
    """Between two parts the counter grows by the part's true energy, unless it was reset."""
    parts = runs.a.parts_of(machine)
    restores = _restores(runs.a, machine)
    previous: PartRecord | None = None
    for p in parts:
        window_start = p.window_start_ns
        reset_inside = any(window_start < t <= p.end_ns for t in restores)
        before = 0.0 if previous is None else previous.energy_counter_wh
        if reset_inside:
            # the counter restarted at 0 inside the window: it shows less than the truth
            assert p.energy_counter_wh <= p.energy_wh + 1e-9
        else:
            assert p.energy_counter_wh - before == pytest.approx(p.energy_wh, rel=1e-9, abs=1e-9), (
                f"{machine} part {p.part_count}: counter delta is not the part's true energy"
            )
        previous = p
    total = runs.a.summary["machines"][machine]["energy_total_wh"]
    assert sum(p.energy_wh for p in parts) <= total + 1e-6


def test_power_losses_happened_and_reset_the_counters(runs: Runs) -> None:
    resets = {m: runs.a.summary["machines"][m]["resets"] for m in PRODUCERS}
    assert sum(resets.values()) > 0, f"no power loss at {LOSS_PER_HOUR}/h: {resets}"


@pytest.mark.parametrize("machine", ["mill-1", "laser-1"])
def test_published_opcua_counters_follow_the_parts(runs: Runs, machine: str) -> None:
    """What the OPC UA server wrote: every part count once, the energy counter at every part."""
    published: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in runs.a.published:
        if r.machine == machine:
            published[r.signal].append((r.ts_ns, r.value))
    counts = [v for _, v in published["part_count"]]
    assert counts == list(range(len(counts))), "part counter published 0, 1, 2, ... one by one"
    parts = runs.a.parts_of(machine)
    assert len(counts) == len(parts) + 1
    energy = dict(published["energy_active"])
    for p in parts:
        assert energy[p.end_ns] == p.energy_counter_wh, (
            f"{machine} part {p.part_count}: energy counter not published at the part's end"
        )
    restores = set(_restores(runs.a, machine))
    values = published["energy_active"]
    for (_t0, v0), (t1, v1) in itertools.pairwise(values):
        if v1 < v0:
            assert t1 in restores and v1 == 0.0, (
                f"{machine}: energy counter went down at {t1} without a power-loss reset"
            )


def test_summary_meter_covers_every_machine(runs: Runs) -> None:
    machines = runs.a.summary["machines"]
    meter_wh = machines["meter-1"]["energy_wh"]
    produced = sum(machines[m]["energy_total_wh"] for m in PRODUCERS)
    assert meter_wh > produced, "the meter sees every machine plus the base load"
    assert machines["meter-1"]["energy_kwh"] == pytest.approx(meter_wh / 1000)
