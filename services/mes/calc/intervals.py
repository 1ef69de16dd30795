"""Half-open nanosecond intervals, the common ground of OEE and attribution."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class Interval:
    start_ns: int
    end_ns: int

    @property
    def seconds(self) -> float:
        return max(0, self.end_ns - self.start_ns) / NS

    def clip(self, other: Interval) -> Interval | None:
        start, end = max(self.start_ns, other.start_ns), min(self.end_ns, other.end_ns)
        return Interval(start, end) if end > start else None

    def contains(self, ts_ns: int) -> bool:
        return self.start_ns <= ts_ns < self.end_ns


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Union of intervals, sorted and non-overlapping, so nothing is counted twice."""
    out: list[Interval] = []
    for iv in sorted(intervals, key=lambda i: i.start_ns):
        if iv.end_ns <= iv.start_ns:
            continue
        if out and iv.start_ns <= out[-1].end_ns:
            last = out[-1]
            out[-1] = Interval(last.start_ns, max(last.end_ns, iv.end_ns))
        else:
            out.append(iv)
    return out


def overlap_seconds(a: Iterable[Interval], b: Iterable[Interval]) -> float:
    ma, mb = merge(a), merge(b)
    total = 0
    i = j = 0
    while i < len(ma) and j < len(mb):
        clipped = ma[i].clip(mb[j])
        if clipped:
            total += clipped.end_ns - clipped.start_ns
        if ma[i].end_ns < mb[j].end_ns:
            i += 1
        else:
            j += 1
    return total / NS


def total_seconds(intervals: Iterable[Interval]) -> float:
    return sum(iv.seconds for iv in merge(intervals))
