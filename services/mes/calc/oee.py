"""OEE = availability x performance x quality, with the planned time and ideal cycle times shown.

Planned time is the time an operation run was active on the machine (an operator had put a
batch on it) inside the window: a machine with nothing to do is not losing OEE. Availability
is the share of planned time the machine reported ``running``; performance compares the ideal
time of the parts made (each part's operation's ideal cycle time) with that running time;
quality is good parts over all parts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from microfactory.mes.calc.intervals import Interval, merge, overlap_seconds, total_seconds


@dataclass(frozen=True, slots=True)
class StateChange:
    ts_ns: int
    state: str


@dataclass(frozen=True, slots=True)
class PartSample:
    ts_ns: int
    good: bool
    quantity: int
    ideal_cycle_time_s: float | None


@dataclass(frozen=True, slots=True)
class OeeResult:
    window: Interval
    planned_time_s: float
    running_time_s: float
    state_data: bool
    total_parts: int
    good_parts: int
    ideal_time_s: float
    ideal_cycle_time_s: float | None
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None


def state_spans(
    changes: Sequence[StateChange], window: Interval, state: str = "running"
) -> list[Interval]:
    """Intervals of ``window`` spent in ``state``; the change before the window sets the start."""
    ordered = sorted(changes, key=lambda c: c.ts_ns)
    spans: list[Interval] = []
    for idx, change in enumerate(ordered):
        if change.state != state:
            continue
        end = ordered[idx + 1].ts_ns if idx + 1 < len(ordered) else window.end_ns
        clipped = Interval(change.ts_ns, end).clip(window)
        if clipped:
            spans.append(clipped)
    return merge(spans)


def compute_oee(
    window: Interval,
    planned: Sequence[Interval],
    changes: Sequence[StateChange],
    parts: Sequence[PartSample],
    default_ideal_cycle_time_s: float | None = None,
) -> OeeResult:
    """OEE of one machine in ``window``; ``changes`` must include the last one before it."""
    planned_in = merge(c for iv in planned if (c := iv.clip(window)) is not None)
    planned_s = total_seconds(planned_in)
    state_data = bool(changes)
    if state_data:
        running_s = overlap_seconds(state_spans(changes, window), planned_in)
    else:
        running_s = planned_s
    counted = [p for p in parts if any(iv.contains(p.ts_ns) for iv in planned_in)]
    total = sum(p.quantity for p in counted)
    good = sum(p.quantity for p in counted if p.good)
    ideal_s = 0.0
    missing_ideal = False
    for p in counted:
        ct = p.ideal_cycle_time_s or default_ideal_cycle_time_s
        if ct is None:
            missing_ideal = True
            continue
        ideal_s += ct * p.quantity
    availability = running_s / planned_s if planned_s > 0 else None
    performance: float | None
    if running_s <= 0:
        performance = None
    elif total == 0:
        performance = 0.0
    else:
        performance = None if missing_ideal else ideal_s / running_s
    quality = good / total if total > 0 else None
    oee = (
        availability * performance * (1.0 if quality is None else quality)
        if availability is not None and performance is not None
        else None
    )
    return OeeResult(
        window=window,
        planned_time_s=planned_s,
        running_time_s=running_s,
        state_data=state_data,
        total_parts=total,
        good_parts=good,
        ideal_time_s=ideal_s,
        ideal_cycle_time_s=ideal_s / total if total and not missing_ideal else None,
        availability=availability,
        performance=performance,
        quality=quality,
        oee=oee,
    )
