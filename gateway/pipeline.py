"""The pipeline: adapters' output → normalised samples with context → spool.

Adapters call the :class:`Emitter` methods from any thread; everything then runs on the
event loop. Samples are committed in groups (whatever arrived while the previous commit was
on disk), and only then acknowledged to their adapter.

When the spool cannot take a group (its disk is full or failing, or the quota is reached
with ``overflow: stop_accepting``) nothing of it is acknowledged: the samples are *held* in
memory, in order, and written again every second until the spool takes them, and only then
acknowledged. What a source that waits for the acknowledgement (MQTT QoS 1) sent stays
unacknowledged at its broker until then (a restart gets it again); samples from sources that
cannot wait are held up to ``spool.hold_max_samples``, then refused and counted. The
accounting stays exact::

    normalised == spooled + refused + held
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .adapters.base import ConnectionState, DeviceState
from .config import SiteConfig
from .errors import PayloadError
from .health import Health
from .normalise import Normaliser
from .sample import RawSample, Sample
from .spool import RateLimitedLog, Spool, SpoolDiskError, SpoolFull

log = logging.getLogger(__name__)
Ack = Callable[[], None] | None
MAX_GROUP = 20_000
RETRY_S = 1.0  # how often held samples are offered to the spool again
BEAT_S = 1.0  # the pipeline shows life at least this often, even when idle
ROOM_BYTES = 1 << 20  # free space that ends a "disk full" state (hysteresis against flapping)


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
class _Held:
    """One submission on its way into the spool: what is left of it, and its acknowledgement."""

    samples: list[Sample]
    dead: list[_DeadLetter] = field(default_factory=list)
    ack: Ack = None


class HoldState:
    """A reason the spool takes nothing (disk, quota): one log line when it starts, one when
    it ends (how long, how many samples were held meanwhile)."""

    def __init__(self, health: Health, what: str, *, disk: Path | None = None) -> None:
        self._health = health
        self._what = what
        self._disk = disk
        self.reason: str | None = None
        self._since = 0.0
        self._full = False
        self.held = 0  # samples that waited in memory during the current spell

    def failed(self, reason: str, *, full: bool = False) -> None:
        if self.reason is None:
            self._since = time.monotonic()
            self.held = 0
            log.error(
                "%s: %s; acknowledging nothing, holding samples in memory, retrying every %.0f s",
                self._what,
                reason,
                RETRY_S,
            )
        self.reason = reason
        self._full = full
        if self._disk is not None:
            self._health.spool_disk_error = reason

    def ok(self) -> None:
        """A write went through: the spell ends (for a full disk, once there is room again)."""
        if self.reason is None:
            return
        if self._full and self._disk is not None:
            try:
                if shutil.disk_usage(self._disk).free < ROOM_BYTES:
                    return
            except OSError:
                return
        log.warning(
            "%s: cleared after %.1f s; %d samples were held meanwhile and are now spooled",
            self._what,
            time.monotonic() - self._since,
            self.held,
        )
        self.reason = None
        if self._disk is not None:
            self._health.spool_disk_error = None


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
        self._pending: deque[_Held] = deque()  # in order; the head goes to the spool first
        self._retry_at = 0.0
        self._hold_max = site.spool.hold_max_samples
        self.disk = HoldState(health, "spool disk", disk=Path(site.spool.path).parent)
        self.quota = HoldState(health, "spool quota (overflow stop_accepting)")
        self._drops = RateLimitedLog(log, logging.ERROR)
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
    @property
    def held(self) -> int:
        """Samples normalised but not yet in the spool (held while it cannot take them)."""
        return sum(len(h.samples) for h in self._pending)

    def _holding(self) -> bool:
        return self.disk.reason is not None or self.quota.reason is not None

    async def run(self) -> None:
        """Consume until :meth:`close` is called and the queue is empty.

        Restartable: what was taken from the queue but not yet spooled stays held on this
        object, so a supervisor may call ``run`` again after a failure.
        """
        loop = asyncio.get_running_loop()
        while True:
            self._health.beats["pipeline"] = time.monotonic_ns()
            if self._pending and self._holding():
                timeout = max(0.0, min(BEAT_S, self._retry_at - loop.time()))
            else:
                timeout = BEAT_S
            try:
                item = await asyncio.wait_for(self._queue.get(), timeout)
            except TimeoutError:
                if self._pending and loop.time() >= self._retry_at:
                    await self._flush()
                self._drops.flush()
                continue
            if item is None:
                await self._flush()
                self._abandon()
                return
            items = [item]
            count = len(item.samples) if isinstance(item, _Samples) else 1
            stop = False
            while count < MAX_GROUP and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True  # finish this group, then stop
                    break
                items.append(nxt)
                count += len(nxt.samples) if isinstance(nxt, _Samples) else 1
            self._admit(items)
            if not self._holding() or loop.time() >= self._retry_at:
                await self._flush()
            if stop:
                self._queue.put_nowait(None)

    def close(self) -> None:
        self._put(None)

    def _admit(self, items: list[_Samples | _DeadLetter]) -> None:
        """Normalise, then queue behind what is held (bounded for sources that cannot wait)."""
        now_ns = time.time_ns()
        holding = self._holding()
        held_unacked = sum(len(h.samples) for h in self._pending if h.ack is None)
        for item in items:
            if isinstance(item, _DeadLetter):
                entry = _Held([], [item], item.ack)
            else:
                entry = _Held([], [], item.ack)
                for raw in item.samples:
                    self._health.received += 1
                    try:
                        sample = self._normalise(raw, now_ns)
                    except PayloadError as err:
                        entry.dead.append(
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
                    entry.samples.append(sample)
                self._health.normalised += len(entry.samples)
            if holding:
                if entry.ack is None and held_unacked + len(entry.samples) > self._hold_max:
                    # cannot wait, no room left to hold: turned away, counted, told
                    self._health.refused += len(entry.samples)
                    self._drops.add(
                        "samples refused (spool not taking them, hold_max_samples reached)",
                        len(entry.samples),
                    )
                    self._drops.add(
                        "dead letters not recorded (spool not writable)", len(entry.dead)
                    )
                    continue
                if entry.ack is None:
                    held_unacked += len(entry.samples)
                self.disk.held += len(entry.samples) if self.disk.reason else 0
                self.quota.held += len(entry.samples) if self.quota.reason else 0
            self._pending.append(entry)

    async def _flush(self) -> None:
        """Offer what is held to the spool, in order; acknowledge each submission once spooled."""
        loop = asyncio.get_running_loop()
        while self._pending:
            group: list[_Held] = []
            count = 0
            for h in self._pending:
                if group and count + len(h.samples) > MAX_GROUP:
                    break
                group.append(h)
                count += len(h.samples)
            samples = [s for h in group for s in h.samples]
            refused = False
            try:
                for h in group:
                    while h.dead:
                        d = h.dead[0]
                        await self._spool.dead_letter(d.source, d.origin, d.reason, d.payload)
                        h.dead.pop(0)
                        self._health.dead_lettered[d.source] += 1
                        log.info("dead letter from %s (%s): %s", d.source, d.origin, d.reason)
                try:
                    await self._spool.append(samples)
                    accepted = len(samples)
                except SpoolFull as err:
                    accepted, refused = err.accepted, True
                    self.quota.failed(str(err))
            except SpoolDiskError as err:
                self.disk.failed(err.reason, full=err.full)
                self._retry_at = loop.time() + RETRY_S
                return
            self.disk.ok()
            self._settle(group, accepted)
            if refused:
                self._retry_at = loop.time() + RETRY_S
                return
            self.quota.ok()

    def _settle(self, group: list[_Held], accepted: int) -> None:
        """The first ``accepted`` samples of ``group`` are spooled: acknowledge what is whole."""
        self._health.spooled += accepted
        spooled: list[Sample] = []
        for h in group:
            take = min(len(h.samples), accepted)
            accepted -= take
            spooled.extend(h.samples[:take])
            del h.samples[:take]
            if h.samples or h.dead:
                break
            self._pending.popleft()
            if h.ack is not None:
                h.ack()
        for s in spooled:
            self.last[(s.machine, s.signal)] = LastValue(s.value, s.unit, s.ts_ns)
        if self._on_spooled and spooled:
            self._on_spooled(spooled)

    def _abandon(self) -> None:
        """At stop, what is still held: acked sources get it again from their broker."""
        if not self._pending:
            return
        waiting = sum(len(h.samples) for h in self._pending if h.ack is not None)
        lost = sum(len(h.samples) for h in self._pending if h.ack is None)
        self._health.refused += lost
        log.warning(
            "stopping with %d held samples not spooled: %d stay unacknowledged at their "
            "broker (sent again on the next start), %d are lost",
            waiting + lost,
            waiting,
            lost,
        )
        self._pending.clear()
        self._drops.flush(force=True)
