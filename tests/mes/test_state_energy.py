"""Energy by machine state within run windows (pure): split at run boundaries, parts' windows."""

from __future__ import annotations

import pytest

from microfactory.mes.calc.intervals import Interval
from microfactory.mes.calc.state_energy import (
    StateChange,
    StateSpan,
    attribute,
    part_windows,
    spans_from_changes,
)

S = 1_000_000_000


def test_spans_from_changes_use_the_reported_interval_or_fall_back_to_unknown() -> None:
    changes = [
        StateChange(0, "setup", None, None, None),
        StateChange(10 * S, "running", "setup", 0, 5.0),
        StateChange(30 * S, "idle", "running", None, None),  # an older gateway: no energy
    ]
    assert spans_from_changes(changes, until_ns=40 * S) == [
        StateSpan(0, 10 * S, "setup", 5.0),
        StateSpan(10 * S, 30 * S, "running", None),
        StateSpan(30 * S, 40 * S, "idle", None),  # still idle: energy not known yet
    ]


def test_an_interval_straddling_two_runs_is_split_by_time() -> None:
    spans = [StateSpan(0, 100 * S, "idle", 50.0)]
    result = attribute([("a", Interval(0, 40 * S)), ("b", Interval(40 * S, 200 * S))], spans)
    assert result["a"].states["idle"].energy_wh == pytest.approx(20.0)
    assert result["b"].states["idle"].energy_wh == pytest.approx(30.0)
    assert result["b"].states["idle"].seconds == pytest.approx(60.0)
    assert result["a"].energy_wh + result["b"].energy_wh == pytest.approx(50.0)


def test_energy_outside_the_measured_parts_windows_and_unknown_time() -> None:
    spans = [
        StateSpan(0, 60 * S, "running", 60.0),
        StateSpan(60 * S, 80 * S, "idle", 4.0),
        StateSpan(80 * S, 90 * S, "running", None),
    ]
    parts = part_windows([(5 * S, False), (30 * S, True), (50 * S, True), (50 * S, True)])
    assert parts == [Interval(5 * S, 30 * S), Interval(30 * S, 50 * S)]
    (result,) = attribute([("run", Interval(0, 90 * S))], spans, parts).values()
    running, idle = result.states["running"], result.states["idle"]
    assert running.energy_wh == pytest.approx(60.0)
    assert running.outside_parts_wh == pytest.approx(15.0)  # 0..5 s and 50..60 s
    assert idle.outside_parts_wh == pytest.approx(4.0)
    assert running.unknown_s == pytest.approx(10.0) and result.unknown_s == pytest.approx(10.0)
    assert result.energy_wh - result.outside_parts_wh == pytest.approx(45.0)  # the parts' share
    assert result.known


def test_part_without_energy_leaves_its_window_uncovered() -> None:
    assert part_windows([(0, False), (10 * S, False), (20 * S, True)]) == [Interval(10 * S, 20 * S)]
