"""Simulated time: wall time stretched by a speed factor from a chosen origin."""

from __future__ import annotations

import time
from collections.abc import Callable


class SimClock:
    """Map monotonic wall time to simulated UTC nanoseconds.

    Monotonic time keeps the simulation steady when the wall clock is stepped (NTP on a Pi);
    the origin defaults to "now" so accelerated runs still carry believable dates.
    """

    def __init__(
        self,
        speed: float = 1.0,
        start_ns: int | None = None,
        *,
        monotonic_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if not speed > 0:
            raise ValueError(f"speed must be > 0, got {speed}")
        self._speed = speed
        self._monotonic_ns = monotonic_ns
        self._start_ns = time.time_ns() if start_ns is None else start_ns
        self._origin = monotonic_ns()

    @property
    def speed(self) -> float:
        return self._speed

    @property
    def start_ns(self) -> int:
        return self._start_ns

    def now_ns(self) -> int:
        return self._start_ns + round((self._monotonic_ns() - self._origin) * self._speed)

    def wall_seconds(self, sim_seconds: float) -> float:
        """How long the caller must wait for ``sim_seconds`` of simulated time to pass."""
        return sim_seconds / self._speed
