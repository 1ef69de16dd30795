"""Delivering one sink's share of the spool: batches, retries with backoff, quarantine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time

from .errors import SinkError
from .health import Health
from .sample import Sample
from .sinks.base import Sink
from .spool import Spool, SpoolDiskError

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff with full jitter, capped; reset after a success."""

    def __init__(self, base_s: float = 0.5, cap_s: float = 30.0, rng: random.Random | None = None):
        self.base_s = base_s
        self.cap_s = cap_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next(self) -> float:
        ceiling = min(self.cap_s, self.base_s * (2**self.attempt))
        self.attempt += 1
        return float(ceiling / 2 + self._rng.uniform(0, ceiling / 2))

    def reset(self) -> None:
        self.attempt = 0


class Delivery:
    """Moves one sink's cursor forward: everything is delivered or quarantined, in order."""

    def __init__(self, sink: Sink, spool: Spool, health: Health, *, linger_s: float = 0.1) -> None:
        self.sink = sink
        self._spool = spool
        self._health = health
        self._linger_s = linger_s
        self._wake = asyncio.Event()
        self._stopping = False
        self._stop_event = asyncio.Event()
        self.backoff = Backoff()
        self.max_retry_after_s = 300.0

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._stop_event.set()
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped; on stop, keep going until the spool is drained for us."""
        name = self.sink.name
        beat = f"sink:{name}"
        while True:
            self._health.beats[beat] = time.monotonic_ns()
            try:
                batch = await self._spool.read(name, self.sink.batch_size)
            except SpoolDiskError as err:  # an I/O error reading: try again, do not die
                log.warning("sink %s: cannot read the spool: %s", name, err)
                await self._pause(1.0)
                if self._stopping:
                    return
                continue
            if not batch:
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            samples = [b.sample for b in batch]
            poison: list[tuple[str, str]] = []
            try:
                await self._deliver(samples, poison)
            except Exception as err:  # supervisor: a bug in a sink must not end its delivery
                # Retryable: the same batch again after a pause; nothing moves forward.
                pause = self._failed(err)
                if self._stopping:
                    return
                await self._pause(pause)
                if self._stopping:
                    return
                continue
            self.backoff.reset()
            self._health.sink_errors.pop(name, None)
            delivered = len(samples) - len(poison)
            # the quarantine records and the cursor move in one transaction: a crash between
            # them can neither lose a poison point nor record it twice
            await self._spool.ack(name, batch[-1].seq, delivered=delivered, quarantined=poison)
            self._health.delivered[name] += delivered
            if poison:
                self._health.quarantined[name] += len(poison)
                for reason, line in poison:
                    log.error("sink %s: quarantined a point: %s: %s", name, reason, line[:200])
            if len(batch) < self.sink.batch_size and not self._stopping:
                # Let a few more samples gather instead of writing them one by one.
                await asyncio.sleep(self._linger_s)

    def _failed(self, err: Exception) -> float:
        """Count a failed write; return how long to wait before the next attempt."""
        name = self.sink.name
        self._health.retried[name] += 1
        if isinstance(err, SinkError):
            self._health.sink_errors[name] = str(err)
            if err.retry_after_s is not None:
                # The server said when: never earlier (and never more than the cap).
                self.backoff.attempt += 1
                pause = min(max(err.retry_after_s, 0.0), self.max_retry_after_s)
                log.warning("sink %s: %s; retrying in %.1fs as asked", name, err, pause)
                return pause
            pause = self.backoff.next()
            log.warning("sink %s: %s; retrying in %.1fs", name, err, pause)
            return pause
        self._health.sink_errors[name] = f"internal error: {err!r}"
        pause = self.backoff.next()
        log.exception("sink %s: unexpected error; retrying in %.1fs", name, pause)
        return pause

    async def _pause(self, seconds: float) -> None:
        """Sleep before a retry; a stop request cuts it short (the batch stays spooled).

        Shows life every second meanwhile: a long Retry-After is not a hung task.
        """
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        while not self._stop_event.is_set():
            self._health.beats[f"sink:{self.sink.name}"] = time.monotonic_ns()
            left = end - loop.time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_event.wait(), min(1.0, left))

    async def _deliver(self, samples: list[Sample], poison: list[tuple[str, str]]) -> None:
        """Write, and when the server refuses the points themselves, find the bad ones by
        bisection so the good ones still land (writes are idempotent).

        The refused points are added to ``poison`` as (reason, line); a retryable error on the
        way abandons the whole attempt (it is retried from the start, poison found again).
        """
        try:
            await self.sink.write(samples)
            return
        except SinkError as err:
            if err.retryable:
                raise
            if len(samples) == 1:
                poison.append((str(err), self.sink.describe(samples[0])))
                return
        mid = len(samples) // 2
        await self._deliver(samples[:mid], poison)
        await self._deliver(samples[mid:], poison)
