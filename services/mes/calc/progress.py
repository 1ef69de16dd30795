"""Progress of a batch or an order: good parts out of the last routing operation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OperationCount:
    seq: int
    name: str
    total: int
    scrap: int

    @property
    def good(self) -> int:
        return max(0, self.total - self.scrap)


@dataclass(frozen=True, slots=True)
class Progress:
    quantity: int
    good: int
    scrap: int
    remaining: int
    percent: float
    operations: tuple[OperationCount, ...]


def progress(quantity: int, operations: Sequence[OperationCount]) -> Progress:
    """A part is finished when it passes the last operation good; scrap counts every step."""
    ops = tuple(sorted(operations, key=lambda o: o.seq))
    good = ops[-1].good if ops else 0
    scrap = sum(o.scrap for o in ops)
    percent = min(100.0, 100.0 * good / quantity) if quantity > 0 else 0.0
    return Progress(quantity, good, scrap, max(0, quantity - good), percent, ops)
