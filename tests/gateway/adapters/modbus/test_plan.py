"""Planning reads: grouping, coalescing within the limits, and that greedy is the fewest."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from microfactory.gateway.adapters.modbus.plan import Read, coalesce, group_points
from microfactory.gateway.adapters.modbus.registers import WORDS, Point


def _p(address: int, dtype: str = "float32", function: str = "input", **kw: object) -> Point:
    return Point(
        unit_id=int(kw.get("unit_id", 1)),  # type: ignore[call-overload]
        machine="m",
        signal=f"s{address}",
        function=function,  # type: ignore[arg-type]
        address=address,
        type=dtype,  # type: ignore[arg-type]
        poll_interval_ms=int(kw.get("poll_interval_ms", 1000)),  # type: ignore[call-overload]
    )


def test_contiguous_registers_are_one_read() -> None:
    reads = coalesce([_p(0), _p(2), _p(4)], max_gap=0)
    assert [(r.address, r.count) for r in reads] == [(0, 6)]


def test_a_hole_up_to_max_gap_is_read_across_and_a_larger_one_splits() -> None:
    points = [_p(0), _p(10), _p(30)]  # holes of 8 and 18 registers
    reads = coalesce(points, max_gap=8)
    assert [(r.address, r.count) for r in reads] == [(0, 12), (30, 2)]
    assert [len(r.points) for r in reads] == [2, 1]


def test_reads_stop_at_125_registers() -> None:
    points = [_p(a) for a in range(0, 300, 2)]
    reads = coalesce(points, max_gap=8)
    assert [r.count for r in reads] == [124, 124, 52]
    assert all(r.count <= 125 for r in reads)


def test_bits_stop_at_2000_and_at_the_configured_limit() -> None:
    points = [_p(a, "bool", "coil") for a in range(0, 2500)]
    assert [r.count for r in coalesce(points, max_gap=0)] == [2000, 500]
    assert [r.count for r in coalesce(points, max_gap=0, max_bits=1000)] == [1000] * 2 + [500]


def test_groups_by_unit_function_and_interval() -> None:
    points = [
        _p(0),
        _p(2, unit_id=2),
        _p(4, function="holding"),
        _p(6, poll_interval_ms=5000),
        _p(8),
    ]
    groups = group_points(points)
    assert sorted(groups) == [
        (1, "holding", 1000),
        (1, "input", 1000),
        (1, "input", 5000),
        (2, "input", 1000),
    ]
    assert [p.address for p in groups[(1, "input", 1000)]] == [0, 8]


TYPES = st.sampled_from(["uint16", "int32", "float32", "float64"])


@st.composite
def layouts(draw: st.DrawFn) -> list[Point]:
    """Non-overlapping registers of one device and function, with random holes."""
    address, points = 0, []
    for _ in range(draw(st.integers(1, 40))):
        address += draw(st.integers(0, 20))
        dtype = draw(TYPES)
        points.append(_p(address, dtype))
        address += WORDS[dtype]
    return points


def _feasible(points: list[Point], max_gap: int, limit: int) -> bool:
    """One read may cover these consecutive points."""
    holes_ok = all(b.address - a.end <= max_gap for a, b in itertools.pairwise(points))
    return holes_ok and points[-1].end - points[0].address <= limit


def _fewest(points: list[Point], max_gap: int, limit: int) -> int:
    """The fewest reads covering the points, by dynamic programming (the reference)."""
    n = len(points)
    best = [0] + [n + 1] * n
    for j in range(1, n + 1):
        for i in range(j):
            if _feasible(points[i:j], max_gap, limit):
                best[j] = min(best[j], best[i] + 1)
    return best[n]


@settings(max_examples=200, deadline=None)
@given(layouts(), st.integers(0, 20), st.integers(4, 125))
def test_every_point_read_once_within_limits_in_the_fewest_reads(
    points: list[Point], max_gap: int, limit: int
) -> None:
    reads = coalesce(points, max_gap=max_gap, max_registers=limit)
    covered = [p for r in reads for p in r.points]
    assert sorted(covered, key=lambda p: p.address) == points
    for r in reads:
        assert isinstance(r, Read)
        assert r.count <= limit
        assert r.address == r.points[0].address and r.end == r.points[-1].end
        assert _feasible(list(r.points), max_gap, limit)
    assert len(reads) == _fewest(points, max_gap, limit)
