"""Per-device liveness inside one adapter: a device that goes silent or says it is gone.

An adapter's connection (the broker, the Modbus bus) can be up while one device behind it is
not: a Tasmota plug unplugged, a meter on a cut RS-485 segment, a Sparkplug edge node whose
death certificate arrived. :class:`ConnectionSupervisor` watches the connection; this watches
each device on it, the same way for every protocol:

- ``seen(device, machines)`` after data from the device; the first time it declares the
  device (and which machines it speaks for);
- past ``stale_after_s`` without data the device is **stale**; ``offline(device, reason)``
  (an MQTT last will, a Sparkplug NDEATH) makes it **offline** at once;
- data after a stale or offline spell reports one gap per machine for the silent time, with
  the reason in words, and the device is **live** again.

While the adapter's connection is down the watch is paused (the supervisor calls
:meth:`pause` and :meth:`resume`): the connection's gap already covers that time, and a
device must not also go stale because the broker or the bus was away.

Each change is one log line and one :meth:`Emitter.device` call (shown by ``/metrics`` and
``microfactory status``). ``seen`` and ``offline`` are thread-safe, so a protocol library's
own thread (paho's) may call them; :meth:`run` is the periodic check, started by the adapter.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Collection
from dataclasses import dataclass

from .adapters.base import AdapterContext, DeviceState

CHECK_EVERY_S = 5.0  # at most this long between two staleness checks


@dataclass(slots=True)
class _Device:
    machines: tuple[str, ...]
    stale_after_s: float | None
    state: DeviceState = "live"
    last_seen: float = 0.0  # time.monotonic()
    last_seen_ns: int = 0  # context clock
    down_since_ns: int | None = None
    down_reason: str = ""


class DeviceWatch:
    """The devices of one adapter, each live, stale or offline (all state on the instance)."""

    def __init__(
        self, context: AdapterContext, adapter: str, *, stale_after_s: float | None = None
    ) -> None:
        if stale_after_s is not None and stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be > 0 or None, got {stale_after_s!r}")
        self._context = context
        self._log = context.logger
        self.adapter = adapter
        self.stale_after_s = stale_after_s
        self._devices: dict[str, _Device] = {}
        self._lock = threading.Lock()
        self._paused = False

    # ------------------------------------------------------------------ adapter's API
    def seen(
        self, device: str, machines: Collection[str] = (), stale_after_s: float | None = None
    ) -> None:
        """Data arrived from ``device`` (any thread); ends a stale or offline spell with a gap.

        ``machines`` and ``stale_after_s`` are taken the first time a device is seen (the
        adapter's default when None); later calls may leave them out.
        """
        now, now_ns = time.monotonic(), self._context.clock()
        with self._lock:
            dev = self._devices.get(device)
            if dev is None:
                dev = _Device(
                    tuple(sorted(machines)),
                    stale_after_s if stale_after_s is not None else self.stale_after_s,
                )
                self._devices[device] = dev
                dev.last_seen, dev.last_seen_ns = now, now_ns
                self._context.emitter.device(self.adapter, device, "live")
                return
            dev.last_seen, dev.last_seen_ns = now, now_ns
            if dev.state == "live":
                return
            since, was, why = dev.down_since_ns, dev.state, dev.down_reason
            dev.state, dev.down_since_ns, dev.down_reason = "live", None, ""
            machines_now = dev.machines
        if since is None:  # cannot happen: a spell always has a start
            since = now_ns
        silent_s = (now_ns - since) / 1e9
        reason = (
            f"device {device} offline: {why}"
            if was == "offline"
            else f"device {device}: no data for {silent_s:.0f} s"
        )
        self._log.info("%s: device %s: data again after %.0f s", self.adapter, device, silent_s)
        for machine in machines_now:
            self._context.emitter.gap(machine, since, now_ns, reason)
        self._context.emitter.device(self.adapter, device, "live")

    def offline(
        self,
        device: str,
        reason: str,
        machines: Collection[str] = (),
        since_ns: int | None = None,
        stale_after_s: float | None = None,
    ) -> None:
        """``device`` says it is gone (any thread): offline now, or since ``since_ns``.

        The gap reported when data comes back starts at the last data seen before, or at
        ``since_ns`` when that is earlier.
        """
        now_ns = self._context.clock()
        with self._lock:
            dev = self._devices.get(device)
            if dev is None:
                limit = stale_after_s if stale_after_s is not None else self.stale_after_s
                dev = _Device(tuple(sorted(machines)), limit)
                dev.last_seen, dev.last_seen_ns = time.monotonic(), now_ns
                self._devices[device] = dev
            if dev.state == "offline":
                return
            start = dev.last_seen_ns if dev.state == "live" else (dev.down_since_ns or now_ns)
            if since_ns is not None:
                start = min(start, since_ns)
            dev.state, dev.down_since_ns, dev.down_reason = "offline", start, reason
        self._log.warning("%s: device %s is offline (%s)", self.adapter, device, reason)
        self._context.emitter.device(self.adapter, device, "offline")

    def state(self, device: str) -> DeviceState | None:
        """The device's state, or None for a device never seen."""
        with self._lock:
            dev = self._devices.get(device)
            return None if dev is None else dev.state

    @property
    def states(self) -> dict[str, DeviceState]:
        """Every device seen so far and its state."""
        with self._lock:
            return {name: dev.state for name, dev in self._devices.items()}

    def pause(self) -> None:
        """The connection is down: no device goes stale until :meth:`resume`."""
        with self._lock:
            self._paused = True

    def resume(self) -> None:
        """The connection is back: live devices' silence is counted from now."""
        now, now_ns = time.monotonic(), self._context.clock()
        with self._lock:
            self._paused = False
            for dev in self._devices.values():
                if dev.state == "live":
                    dev.last_seen, dev.last_seen_ns = now, now_ns

    def check(self) -> None:
        """Mark live devices stale once they have been silent past their ``stale_after_s``."""
        now = time.monotonic()
        went_stale: list[tuple[str, float]] = []
        with self._lock:
            if self._paused:
                return
            for name, dev in self._devices.items():
                limit = dev.stale_after_s
                if dev.state != "live" or limit is None:
                    continue
                quiet = now - dev.last_seen
                if quiet >= limit:
                    dev.state = "stale"
                    dev.down_since_ns = dev.last_seen_ns
                    went_stale.append((name, quiet))
        for name, quiet in went_stale:
            self._log.warning("%s: device %s: no data for %.0f s", self.adapter, name, quiet)
            self._context.emitter.device(self.adapter, name, "stale")

    async def run(self) -> None:
        """Check staleness until cancelled; an unexpected error is logged, never fatal."""
        while True:
            with self._lock:
                limits = [d.stale_after_s for d in self._devices.values() if d.stale_after_s]
            if self.stale_after_s:
                limits.append(self.stale_after_s)
            period = min([CHECK_EVERY_S, *(limit / 4 for limit in limits)])
            await asyncio.sleep(period)
            try:
                self.check()
            except Exception:  # the watch must outlive a bug in one check
                self._log.exception("%s: device staleness check failed", self.adapter)
