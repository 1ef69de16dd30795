"""Delivering one sink's share of the spool: batches, retries with backoff, quarantine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from .errors import SinkError
from .health import Health
from .sample import Sample
from .sinks.base import Sink
from .spool import Spool

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
        self.backoff = Backoff()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Deliver until stopped; on stop, keep going until the spool is drained for us."""
        name = self.sink.name
        while True:
            batch = await self._spool.read(name, self.sink.batch_size)
            if not batch:
                if self._stopping:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            samples = [b.sample for b in batch]
            try:
                await self._deliver(samples)
            except SinkError as err:
                # Retryable: the same batch again after a pause; nothing moves forward.
                self._health.retried[name] += 1
                self._health.sink_errors[name] = str(err)
                pause = err.retry_after_s if err.retry_after_s is not None else self.backoff.next()
                log.warning("sink %s: %s; retrying in %.1fs", name, err, pause)
                if self._stopping:
                    return
                await asyncio.sleep(pause)
                continue
            self.backoff.reset()
            self._health.sink_errors.pop(name, None)
            await self._spool.ack(name, batch[-1].seq)
            self._health.delivered[name] += len(samples)
            if len(batch) < self.sink.batch_size and not self._stopping:
                # Let a few more samples gather instead of writing them one by one.
                await asyncio.sleep(self._linger_s)

    async def _deliver(self, samples: list[Sample]) -> None:
        """Write, and when the server refuses the points themselves, find and quarantine
        the bad ones by bisection so the good ones still land (writes are idempotent)."""
        try:
            await self.sink.write(samples)
            return
        except SinkError as err:
            if err.retryable:
                raise
            if len(samples) == 1:
                await self._spool.quarantine(
                    self.sink.name, str(err), [self.sink.describe(samples[0])]
                )
                self._health.quarantined[self.sink.name] += 1
                log.error("sink %s: quarantined a point: %s", self.sink.name, err)
                return
        mid = len(samples) // 2
        await self._deliver(samples[:mid])
        await self._deliver(samples[mid:])
