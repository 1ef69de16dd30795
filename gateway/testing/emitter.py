"""A recording :class:`~microfactory.gateway.sdk.Emitter` that checks the contract it records.

Like Telegraf's ``testutil.Accumulator``: an adapter under test is given this emitter instead
of the gateway's pipeline; it keeps every call, answers ``ack`` the way the pipeline does
(later, from another thread), and notes every breach of the emitter contract in
``violations`` instead of raising into the adapter, so a test can show them all at once.
Samples are also passed through the gateway's real normaliser: what the pipeline would
dead-letter (NaN, a text where a number belongs, a timestamp out of range) is in ``refused``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import get_args

from ..adapters.base import ConnectionState, DeviceState
from ..config import PipelineSettings
from ..errors import PayloadError
from ..normalise import Normaliser
from ..sample import Quality, RawSample

__all__ = ["DeadLetter", "Gap", "RecordingEmitter", "Refused"]

_STATES = frozenset(get_args(ConnectionState))
_DEVICE_STATES = frozenset(get_args(DeviceState))
_QUALITIES = frozenset(get_args(Quality))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One ``dead_letter`` call, or one sample the pipeline's normaliser refused."""

    source: str
    origin: str
    reason: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Gap:
    """One ``gap`` call."""

    machine: str
    start_ns: int
    end_ns: int
    reason: str


@dataclass(frozen=True, slots=True)
class Refused:
    """A submitted sample the pipeline would dead-letter, with the pipeline's reason."""

    sample: RawSample
    reason: str


@dataclass(slots=True)
class RecordingEmitter:
    """Records what an adapter emits and checks each call against the emitter contract.

    ``adapter`` is the adapter's configured name (``connection`` must report it),
    ``machines`` the machines declared in its context (samples and gaps must name one).
    Thread-safe, like the real one: paho's network thread may call it.
    """

    adapter: str
    machines: Collection[str]
    ack_delay_s: float = 0.0
    samples: list[RawSample] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    gaps: list[Gap] = field(default_factory=list)
    states: list[ConnectionState] = field(default_factory=list)
    devices: list[tuple[str, DeviceState]] = field(default_factory=list)  # (device, state)
    violations: list[str] = field(default_factory=list)
    acks_pending: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _normalise: Normaliser = field(default_factory=lambda: Normaliser(PipelineSettings()))

    # ------------------------------------------------------------------ the Emitter protocol
    def submit(self, samples: list[RawSample], ack: Callable[[], None] | None = None) -> None:
        """Record samples, check each, and acknowledge them the way the pipeline does."""
        now_ns = time.time_ns()
        with self._lock:
            if not isinstance(samples, list) or not samples:
                self._violate(f"submit() takes a non-empty list of RawSample, got {samples!r:.80}")
                samples = list(samples) if isinstance(samples, list | tuple) else []
            for sample in samples:
                if not isinstance(sample, RawSample):
                    self._violate(f"submit() got a {type(sample).__name__}, not a RawSample")
                    continue
                self._check_sample(sample)
                self.samples.append(sample)
                try:
                    self._normalise(sample, now_ns)
                except PayloadError as err:
                    self.refused.append(Refused(sample, str(err)))
        self._ack_later(ack)

    def dead_letter(
        self,
        source: str,
        origin: str,
        reason: str,
        payload: bytes,
        ack: Callable[[], None] | None = None,
    ) -> None:
        """Record a dead letter; its source must be the adapter, its reason words."""
        with self._lock:
            if source != self.adapter:
                self._violate(
                    f"dead_letter() source {source!r} is not the adapter {self.adapter!r}"
                )
            if not isinstance(reason, str) or not reason.strip():
                self._violate(f"dead_letter() needs a reason in words, got {reason!r}")
            if not isinstance(payload, bytes | bytearray):
                self._violate(f"dead_letter() payload must be bytes, got {type(payload).__name__}")
            if not isinstance(origin, str):
                self._violate(f"dead_letter() origin must be a str, got {origin!r}")
            self.dead_letters.append(DeadLetter(source, str(origin), str(reason), bytes(payload)))
        self._ack_later(ack)

    def connection(self, adapter: str, state: ConnectionState) -> None:
        """Record a state; it must be one of ConnectionState and name this adapter."""
        with self._lock:
            if adapter != self.adapter:
                self._violate(f"connection() names {adapter!r}, the adapter is {self.adapter!r}")
            if state not in _STATES:
                self._violate(f"connection() state {state!r} is not one of {sorted(_STATES)}")
            self.states.append(state)

    def gap(self, machine: str, start_ns: int, end_ns: int, reason: str) -> None:
        """Record a gap: a declared machine, int ns bounds in order, a reason in words."""
        with self._lock:
            if machine not in self.machines:
                self._violate(f"gap() for undeclared machine {machine!r}")
            for name, value in (("start_ns", start_ns), ("end_ns", end_ns)):
                if isinstance(value, bool) or not isinstance(value, int):
                    self._violate(f"gap() {name} must be int UTC ns, got {value!r}")
            if isinstance(start_ns, int) and isinstance(end_ns, int) and start_ns > end_ns:
                self._violate(f"gap() ends ({end_ns}) before it starts ({start_ns})")
            if not isinstance(reason, str) or not reason.strip():
                self._violate(f"gap() needs a reason in words, got {reason!r}")
            self.gaps.append(Gap(machine, start_ns, end_ns, reason))

    def device(self, adapter: str, device: str, state: DeviceState) -> None:
        """Record a device state: this adapter, a device named in words, a DeviceState."""
        with self._lock:
            if adapter != self.adapter:
                self._violate(f"device() names {adapter!r}, the adapter is {self.adapter!r}")
            if not isinstance(device, str) or not device.strip():
                self._violate(f"device() needs a device name, got {device!r}")
            if state not in _DEVICE_STATES:
                self._violate(f"device() state {state!r} is not one of {sorted(_DEVICE_STATES)}")
            self.devices.append((device, state))

    def device_state(self, device: str) -> DeviceState | None:
        """The last state recorded for ``device`` (None: never reported)."""
        with self._lock:
            for name, state in reversed(self.devices):
                if name == device:
                    return state
        return None

    # ------------------------------------------------------------------ for the test
    def count(self) -> int:
        """Samples recorded so far."""
        with self._lock:
            return len(self.samples)

    def snapshot(self) -> tuple[list[RawSample], list[DeadLetter], list[Gap]]:
        """Copies of the samples, dead letters and gaps recorded so far."""
        with self._lock:
            return list(self.samples), list(self.dead_letters), list(self.gaps)

    def _check_sample(self, s: RawSample) -> None:
        where = f"sample {s.machine}/{s.signal} from {s.origin!r}"
        if s.machine not in self.machines:
            self._violate(f"{where}: machine {s.machine!r} is not declared in the context")
        if not isinstance(s.signal, str) or not s.signal:
            self._violate(f"{where}: signal must be a non-empty str")
        if s.ts_ns is not None and (isinstance(s.ts_ns, bool) or not isinstance(s.ts_ns, int)):
            self._violate(f"{where}: ts_ns must be int UTC ns or None, got {s.ts_ns!r}")
        if s.quality not in _QUALITIES:
            self._violate(f"{where}: quality {s.quality!r} is not one of {sorted(_QUALITIES)}")
        if s.unit is not None and not isinstance(s.unit, str):
            self._violate(f"{where}: unit must be a str or None, got {s.unit!r}")
        if not isinstance(s.origin, str):
            self._violate(f"{where}: origin must be a str, got {s.origin!r}")

    def _violate(self, text: str) -> None:
        if len(self.violations) < 100:
            self.violations.append(text)

    def _ack_later(self, ack: Callable[[], None] | None) -> None:
        """Call ``ack`` from another thread, as the pipeline does once the spool committed."""
        if ack is None:
            return
        if not callable(ack):
            with self._lock:
                self._violate(f"ack must be callable or None, got {ack!r}")
            return
        with self._lock:
            self.acks_pending += 1

        def fire() -> None:
            try:
                ack()
            except Exception as err:  # the adapter's callback broke: that is a finding
                with self._lock:
                    self._violate(f"ack callback raised {type(err).__name__}: {err}")
            with self._lock:
                self.acks_pending -= 1

        timer = threading.Timer(self.ack_delay_s, fire)
        timer.daemon = True
        timer.start()
