"""Downtime Pareto: which reasons cost the most time, largest first, with cumulative share."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ParetoRow:
    reason: str
    occurrences: int
    duration_s: float
    share: float
    cumulative_share: float


def downtime_pareto(items: Iterable[tuple[str, float]]) -> list[ParetoRow]:
    """Rows ordered by total duration (ties by reason name) from (reason, seconds) pairs."""
    duration: dict[str, float] = defaultdict(float)
    count: dict[str, int] = defaultdict(int)
    for reason, seconds in items:
        duration[reason] += max(0.0, seconds)
        count[reason] += 1
    total = sum(duration.values())
    rows: list[ParetoRow] = []
    cumulative = 0.0
    for reason in sorted(duration, key=lambda r: (-duration[r], r)):
        share = duration[reason] / total if total else 0.0
        cumulative += share
        rows.append(ParetoRow(reason, count[reason], duration[reason], share, min(cumulative, 1.0)))
    return rows
