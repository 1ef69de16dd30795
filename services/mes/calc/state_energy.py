"""Energy by machine state within run windows: what the parts did not carry, not hidden.

The gateway reports, with every state change, the Wh the machine used in the state that just
ended (from its own energy counter). Here each such state interval's energy is attributed to
the windows (run segments, or pieces of them) it overlaps, split proportionally by time where
an interval straddles a window boundary. Within a window, the energy of each state is further
split into what lies inside the windows of measured parts (a part's ``energy_wh`` runs from the
previous completion on its machine to its own) and what lies outside any of them, so that

    energy inside measured parts' windows + Σ per state outside them = counter energy in the windows.

Pure functions on plain values, tested without a database.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

from microfactory.mes.calc.intervals import NS, Interval

K = TypeVar("K", bound=Hashable)

STATE_ORDER = ("running", "idle", "setup", "fault", "off")


class StateChange(NamedTuple):
    """One stored StateChanged: the new state, and the ended state's start and energy."""

    ts_ns: int
    state: str
    previous: str | None
    previous_since_ns: int | None
    previous_energy_wh: float | None
    previous_energy_from_ns: int | None = None


@dataclass(frozen=True, slots=True)
class StateSpan:
    """A machine in one state over an interval, with the Wh it used there (None: unknown)."""

    start_ns: int
    end_ns: int
    state: str
    energy_wh: float | None


@dataclass(slots=True)
class StateTotals:
    """Accumulated seconds and Wh of one state in some windows."""

    seconds: float = 0.0
    energy_wh: float = 0.0
    outside_parts_wh: float = 0.0
    unknown_s: float = 0.0

    def add(self, other: StateTotals) -> None:
        self.seconds += other.seconds
        self.energy_wh += other.energy_wh
        self.outside_parts_wh += other.outside_parts_wh
        self.unknown_s += other.unknown_s


@dataclass(slots=True)
class Breakdown:
    """Energy by state in some windows; empty when no state was known there."""

    states: dict[str, StateTotals] = field(default_factory=dict)

    def add(self, other: Breakdown) -> None:
        for state, totals in other.states.items():
            self.states.setdefault(state, StateTotals()).add(totals)

    @property
    def energy_wh(self) -> float:
        return sum(t.energy_wh for t in self.states.values())

    @property
    def outside_parts_wh(self) -> float:
        return sum(t.outside_parts_wh for t in self.states.values())

    @property
    def unknown_s(self) -> float:
        return sum(t.unknown_s for t in self.states.values())

    @property
    def known(self) -> bool:
        return any(t.seconds > t.unknown_s for t in self.states.values())


def spans_from_changes(changes: Sequence[StateChange], until_ns: int) -> list[StateSpan]:
    """State intervals from a machine's state changes (sorted by time).

    A change names the interval that it ended (with energy known only from a later instant
    when the gateway read the counter only after the state began); one without it (an older gateway, or the first
    change a gateway saw) ends an interval of unknown energy from the change before it. The
    state after the last change lasts until ``until_ns``, with unknown energy.
    """
    spans: list[StateSpan] = []
    for i, c in enumerate(changes):
        before = changes[i - 1] if i else None
        state = c.previous or (before.state if before else None)
        since, from_ns = c.previous_since_ns, c.previous_energy_from_ns
        if since is not None and since < c.ts_ns and state:
            if from_ns is not None and since < from_ns < c.ts_ns:
                # energy known from the first counter reading in the state on
                spans.append(StateSpan(since, from_ns, state, None))
                spans.append(StateSpan(from_ns, c.ts_ns, state, c.previous_energy_wh))
            else:
                spans.append(StateSpan(since, c.ts_ns, state, c.previous_energy_wh))
        elif before is not None and before.ts_ns < c.ts_ns:
            spans.append(StateSpan(before.ts_ns, c.ts_ns, before.state, None))
    if changes and changes[-1].ts_ns < until_ns:
        spans.append(StateSpan(changes[-1].ts_ns, until_ns, changes[-1].state, None))
    return spans


def part_windows(completions: Iterable[tuple[int, bool]]) -> list[Interval]:
    """Windows of the measured parts: previous completion to this one, for parts with energy.

    ``completions`` are (completion ns, measured) of every part the machine reported, in time
    order; a part completed at the same instant as the one before it shares its window.
    """
    windows: list[Interval] = []
    last: int | None = None
    for ts, measured in completions:
        if last is not None and ts > last and measured:
            windows.append(Interval(last, ts))
        if last is None or ts > last:
            last = ts
    return windows


def _covered_ns(piece: Interval, covered: Sequence[Interval], ends: Sequence[int]) -> int:
    """Nanoseconds of ``piece`` inside sorted, non-overlapping ``covered`` intervals."""
    total = 0
    for j in range(bisect.bisect_right(ends, piece.start_ns), len(covered)):
        iv = covered[j]
        if iv.start_ns >= piece.end_ns:
            break
        clipped = piece.clip(iv)
        if clipped is not None:
            total += clipped.end_ns - clipped.start_ns
    return total


def attribute(
    windows: Sequence[tuple[K, Interval]],
    spans: Sequence[StateSpan],
    parts: Sequence[Interval] = (),
) -> dict[K, Breakdown]:
    """Per window key, the energy by state of one machine's spans inside those windows."""
    ordered = sorted(spans, key=lambda s: (s.end_ns, s.start_ns))
    span_ends = [s.end_ns for s in ordered]
    covered = sorted(parts, key=lambda p: p.start_ns)
    covered_ends = [p.end_ns for p in covered]
    out: dict[K, Breakdown] = defaultdict(Breakdown)
    for key, window in windows:
        result = out[key]
        for j in range(bisect.bisect_right(span_ends, window.start_ns), len(ordered)):
            span = ordered[j]
            if span.start_ns >= window.end_ns:
                break
            piece = window.clip(Interval(span.start_ns, span.end_ns))
            if piece is None:
                continue
            inside = piece.end_ns - piece.start_ns
            totals = result.states.setdefault(span.state, StateTotals())
            totals.seconds += inside / NS
            if span.energy_wh is None:
                totals.unknown_s += inside / NS
                continue
            share = span.energy_wh / (span.end_ns - span.start_ns)
            outside = inside - _covered_ns(piece, covered, covered_ends)
            totals.energy_wh += share * inside
            totals.outside_parts_wh += share * outside
    return dict(out)


def state_order(state: str) -> tuple[int, str]:
    """Known states in their usual order, others after them by name."""
    return (STATE_ORDER.index(state), "") if state in STATE_ORDER else (len(STATE_ORDER), state)
