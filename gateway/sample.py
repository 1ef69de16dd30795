"""The canonical sample every adapter produces and every sink consumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Quality = Literal["good", "uncertain", "bad"]
Value = float | str


@dataclass(slots=True)
class RawSample:
    """What an adapter read, before units are normalised and the value validated.

    ``value`` is whatever the source gave (it is validated by the pipeline, not trusted);
    ``ts_ns`` is the source timestamp when the machine gives one, else None (receive time).
    """

    machine: str
    signal: str
    value: object
    unit: str | None = None
    ts_ns: int | None = None
    quality: Quality = "good"
    origin: str = ""  # topic or node id, for dead-letter reasons


@dataclass(slots=True)
class Sample:
    """A normalised, validated measurement: the unit of durability and delivery."""

    machine: str
    signal: str
    value: Value
    unit: str
    ts_ns: int
    quality: Quality = "good"
    tags: dict[str, str] = field(default_factory=dict)  # context: order, batch, operation, product
