"""Planning the reads: registers grouped, then coalesced into as few requests as possible.

A poll of 30 meter registers one by one takes 30 round trips (on a 9600 baud bus, about
a second); the same registers in one or two reads take a tenth of that. Registers are
grouped by device, function and poll interval; within a group, sorted by address, a read
is extended to the next register while the unmapped hole between them is at most
``max_gap`` and the read stays within the protocol's limit (125 registers, 2000 bits).
Extending greedily is optimal: no other cut gives fewer reads under the same two limits.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .registers import BIT_FUNCTIONS, FUNCTION_WORDS, Function, Point

MAX_REGISTERS = 125  # Modbus application protocol, FC3/FC4: 125 registers per response
MAX_BITS = 2000  # FC1/FC2: 2000 bits per response


@dataclass(frozen=True, slots=True)
class Read:
    """One request: ``count`` registers (or bits) from ``address`` of one device."""

    unit_id: int
    function: Function
    address: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        return self.address + self.count

    @property
    def where(self) -> str:
        return (
            f"unit {self.unit_id} {FUNCTION_WORDS[self.function]}s {self.address}..{self.end - 1}"
        )


GroupKey = tuple[int, Function, int]  # unit id, function, poll interval (ms)


def group_points(points: Iterable[Point]) -> dict[GroupKey, list[Point]]:
    """Points by (unit id, function, poll interval), each group sorted by address."""
    groups: dict[GroupKey, list[Point]] = {}
    for p in points:
        groups.setdefault((p.unit_id, p.function, p.poll_interval_ms), []).append(p)
    for members in groups.values():
        members.sort(key=lambda p: (p.address, p.end))
    return dict(sorted(groups.items()))


def coalesce(
    points: Iterable[Point],
    *,
    max_gap: int,
    max_registers: int = MAX_REGISTERS,
    max_bits: int = MAX_BITS,
) -> list[Read]:
    """Reads covering ``points`` of one device and function, as few as the limits allow."""
    ordered = sorted(points, key=lambda p: (p.address, p.end))
    reads: list[Read] = []
    current: list[Point] = []
    start = end = 0
    for p in ordered:
        limit = max_bits if p.function in BIT_FUNCTIONS else max_registers
        if p.size > limit:  # cannot happen with the protocol's limits: a value is <= 4 words
            raise ValueError(f"{p.where}: {p.size} registers exceed one read of {limit}")
        joins = (
            current
            and p.unit_id == current[0].unit_id
            and p.function == current[0].function
            and p.address - end <= max_gap
            and max(end, p.end) - start <= limit
        )
        if joins:
            current.append(p)
            end = max(end, p.end)
            continue
        if current:
            reads.append(_read(current, start, end))
        current, start, end = [p], p.address, p.end
    if current:
        reads.append(_read(current, start, end))
    return reads


def _read(points: list[Point], start: int, end: int) -> Read:
    first = points[0]
    return Read(first.unit_id, first.function, start, end - start, tuple(points))


def single(point: Point) -> Read:
    """The read of one point alone (a refused register retried on its own)."""
    return Read(point.unit_id, point.function, point.address, point.size, (point,))
