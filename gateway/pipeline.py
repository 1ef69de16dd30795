"""The pipeline: adapters' output → normalised samples with context → spool.

Adapters call the :class:`Emitter` methods from any thread; everything then runs on the
event loop. Samples are committed in groups (whatever arrived while the previous commit was
on disk), and only then acknowledged to their adapter.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .adapters.base import ConnectionState, DeviceState
from .config import SiteConfig
from .errors import PayloadError
from .health import Health
from .normalise import Normaliser
from .sample import RawSample, Sample
from .spool import Spool, SpoolFull

log = logging.getLogger(__name__)
Ack = Callable[[], None] | None
MAX_GROUP = 20_000


@dataclass(slots=True)
class _Samples:
    samples: list[RawSample]
    ack: Ack


@dataclass(slots=True)
class _DeadLetter:
    source: str
    origin: str
    reason: str
    payload: bytes
    ack: Ack


@dataclass(slots=True)
class LastValue:
    value: float | str
    unit: str
    ts_ns: int


class Pipeline:
    def __init__(
        self,
        site: SiteConfig,
        spool: Spool,
        health: Health,
        on_spooled: Callable[[list[Sample]], None] | None = None,
    ) -> None:
        self._site = site
        self._spool = spool
        self._health = health
        self._normalise = Normaliser(site.pipeline)
        self._on_spooled = on_spooled
        self._queue: asyncio.Queue[_Samples | _DeadLetter | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        # machine -> context tags (order, batch, operation, product)
        self.context: dict[str, dict[str, str]] = {}
        self.last: dict[tuple[str, str], LastValue] = {}

    # ------------------------------------------------------------------ Emitter
    def _put(self, item: _Samples | _DeadLetter | None) -> None:
        if threading.get_ident() == self._loop_thread:
            self._queue.put_nowait(item)
        else:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def submit(self, samples: list[RawSample], ack: Ack = None) -> None:
        self._put(_Samples(samples, ack))

    def dead_letter(
        self, source: str, origin: str, reason: str, payload: bytes, ack: Ack = None
    ) -> None:
        self._put(_DeadLetter(source, origin, reason, payload, ack))

    def connection(self, adapter: str, state: ConnectionState) -> None:
        self._health.connections[adapter] = state

    def device(self, adapter: str, device: str, state: DeviceState) -> None:
        self._health.devices[(adapter, device)] = state

    def gap(self, machine: str, start_ns: int, end_ns: int, reason: str) -> None:
        self._health.gaps += 1
        log.warning(
            "gap on machine %s: %.1f s without data (%s)",
            machine,
            (end_ns - start_ns) / 1e9,
            reason,
        )
        # The gap itself is data: a text sample at the moment data came back, quality bad.
        text = f"{reason} (from {start_ns})"
        self.submit([RawSample(machine, "gap", text, "", end_ns, "bad", "gateway")])

    # ------------------------------------------------------------------ loop
    async def run(self) -> None:
        """Consume until :meth:`close` is called and the queue is empty."""
        while True:
            item = await self._queue.get()
            if item is None:
                return
            items = [item]
            count = len(item.samples) if isinstance(item, _Samples) else 1
            while count < MAX_GROUP and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    self._queue.put_nowait(None)  # finish this group, then stop
                    break
                items.append(nxt)
                count += len(nxt.samples) if isinstance(nxt, _Samples) else 1
            await self._process(items)

    def close(self) -> None:
        self._put(None)

    async def _process(self, items: list[_Samples | _DeadLetter]) -> None:
        now_ns = time.time_ns()
        accepted: list[Sample] = []
        dead: list[_DeadLetter] = []
        acks: list[Callable[[], None]] = []
        for item in items:
            if isinstance(item, _DeadLetter):
                dead.append(item)
            else:
                for raw in item.samples:
                    self._health.received += 1
                    try:
                        sample = self._normalise(raw, now_ns)
                    except PayloadError as err:
                        dead.append(
                            _DeadLetter(
                                "pipeline",
                                raw.origin,
                                str(err),
                                repr(raw.value).encode()[:1024],
                                None,
                            )
                        )
                        continue
                    ctx = self.context.get(sample.machine)
                    if ctx:
                        sample.tags = ctx
                    accepted.append(sample)
            if item.ack is not None:
                acks.append(item.ack)
        for d in dead:
            self._health.dead_lettered[d.source] += 1
            log.info("dead letter from %s (%s): %s", d.source, d.origin, d.reason)
            await self._spool.dead_letter(d.source, d.origin, d.reason, d.payload)
        self._health.normalised += len(accepted)
        try:
            await self._spool.append(accepted)
        except SpoolFull as err:
            self._health.spooled += err.accepted
            self._health.refused += len(accepted) - err.accepted
            log.error("spool refused %d samples: %s", len(accepted) - err.accepted, err)
        else:
            self._health.spooled += len(accepted)
        for s in accepted:
            self.last[(s.machine, s.signal)] = LastValue(s.value, s.unit, s.ts_ns)
        for ack in acks:
            ack()
        if self._on_spooled and accepted:
            self._on_spooled(accepted)
