"""One supervisor owns an adapter's connection: connect, back off, report gaps and staleness.

In the spirit of Home Assistant's ``DataUpdateCoordinator``: the adapter only says how to
open a session (``connect``) and what a session does (``Connection.run``); the supervisor
does the rest the same way for every protocol:

- reports ``connecting`` / ``connected`` / ``disconnected`` / ``stale`` / ``stopped``;
- retries with capped, jittered exponential backoff, and never gives up;
- when data flows again after an outage, reports one gap per machine for the time it was
  away, with the reason in words;
- with ``stale_after_s``, notices a connection that is up but silent (a device that stopped
  publishing), and reports that silence as a gap when data comes back;
- with ``devices`` (the adapter's :class:`DeviceWatch`), runs its staleness check from start
  to stop and pauses it while the connection is down, so an outage is one gap, not one more
  per device;
- logs one line when the source goes away (a warning; an unexpected exception: an error
  with its traceback) and one when it is back, saying how long it was away; the failed
  attempts in between are debug, except a new :class:`NeedsAttention` reason (a refused
  certificate or password), which a person must read;
- ``stop`` finishes within its timeout, cancelling a connect or a session that hangs.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import time
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol, cast

from .adapters.base import AdapterContext, ConnectionState
from .devices import DeviceWatch
from .errors import NeedsAttention


class Connection(Protocol):
    """One session with the source, from a successful connect to its end."""

    async def run(self) -> str:
        """Serve the session until it ends; return why it ended, or raise one of ``errors``."""

    async def close(self) -> None:
        """Release the session (called once, after ``run`` ended or on stop); never raise."""


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff with jitter, so many adapters do not retry in lockstep."""

    initial_s: float = 0.5
    max_s: float = 30.0
    factor: float = 2.0
    jitter: float = 0.2
    _next: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self._next = self.initial_s

    def reset(self) -> None:
        self._next = self.initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt (seconds); each call lengthens the following one."""
        delay = self._next * (1 + random.uniform(-self.jitter, self.jitter))
        self._next = min(self._next * self.factor, self.max_s)
        return max(0.0, min(delay, self.max_s))


_ADDRESS = re.compile(r"\('(?P<host>[^']+)', (?P<port>\d+)")
_OS_ERRORS: dict[type[BaseException], str] = {
    ConnectionRefusedError: "connection refused",
    ConnectionResetError: "connection reset",
    ConnectionAbortedError: "connection aborted",
    BrokenPipeError: "connection broken",
}


def describe_error(err: BaseException) -> str:
    """An exception in short words for a gap reason or a log line (people read both).

    A gap reason lands in InfluxDB beside the data, so it must not be a Python repr:
    ``connection refused by 127.0.0.1:4840`` rather than ``[Errno 111] Connect call failed
    ('127.0.0.1', 4840)``. Other errors (a bug, most often) keep their type and text.
    """
    if isinstance(err, TimeoutError):
        return str(err) or "no answer in time"
    for kind, words in _OS_ERRORS.items():
        if isinstance(err, kind):
            where = _ADDRESS.search(str(err))
            return f"{words} by {where['host']}:{where['port']}" if where else words
    if isinstance(err, OSError) and err.strerror:
        return err.strerror[:1].lower() + err.strerror[1:]
    text = str(err)
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


class ConnectionSupervisor:
    """Keeps one adapter connected; many may run at once (all state on the instance).

    ``connect`` opens a session and returns its :class:`Connection`, or raises one of
    ``errors`` (an expected failure: the source is away) or anything else (a bug: logged with
    its traceback, counted in ``internal_errors``, and retried all the same).
    """

    def __init__(
        self,
        context: AdapterContext,
        *,
        name: str,
        machines: Collection[str],
        connect: Callable[[], Awaitable[Connection]],
        errors: tuple[type[BaseException], ...] = (OSError, TimeoutError),
        connect_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        stale_after_s: float | None = None,
        reconnect_when_stale: bool = False,
        devices: DeviceWatch | None = None,
    ) -> None:
        if connect_timeout_s <= 0:
            raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
        if stale_after_s is not None and stale_after_s <= 0:
            raise ValueError(f"stale_after_s must be > 0 or None, got {stale_after_s!r}")
        self._context = context
        self._log = context.logger
        self.name = name
        self.machines = tuple(sorted(machines))
        self._connect = connect
        self._errors = errors
        self._connect_timeout_s = connect_timeout_s
        self.backoff = backoff or Backoff()
        self._stale_after_s = stale_after_s
        self._reconnect_when_stale = reconnect_when_stale
        self._devices = devices  # paused while the connection is down
        self._task: asyncio.Task[None] | None = None
        self._device_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._deadline: float | None = None  # loop time by which stop() must be done
        self._reconnect_reason: str | None = None
        self._last_data = 0.0  # time.monotonic() of the last data seen
        self._stale_since_ns: int | None = None
        self._state: ConnectionState | None = None
        self._last_failure: str | None = None
        self.sessions = 0  # sessions opened
        self.failures = 0  # connects that failed and sessions that ended other than by stop
        self.internal_errors = 0  # unexpected exceptions caught by the supervisor

    # ------------------------------------------------------------------ adapter's API
    @property
    def state(self) -> ConnectionState | None:
        """The last state reported (None before ``start``)."""
        return self._state

    async def start(self) -> None:
        """Start supervising in the background; returns at once."""
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.create_task(self._supervise(), name=f"supervisor:{self.name}")
        if self._devices is not None:
            self._device_task = asyncio.create_task(
                self._devices.run(), name=f"devices:{self.name}"
            )
            self._device_task.add_done_callback(self._device_watch_ended)

    async def stop(self, timeout_s: float) -> None:
        """End the session and the supervision within ``timeout_s``; report ``stopped``."""
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + max(0.0, timeout_s)
        self._stopping.set()
        self._wake.set()
        devices, self._device_task = self._device_task, None
        if devices is not None:
            devices.cancel()
        task = self._task
        if task is not None and not task.done():
            # most of the time for a clean close, the rest for a cancelled one to unwind
            graceful = max(0.0, timeout_s * 0.8)
            await asyncio.wait({task}, timeout=graceful)
            if not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=max(0.0, self._deadline - loop.time()))
            if not task.done():
                self._log.warning("%s: session did not end within %.1f s", self.name, timeout_s)
        if self._state != "stopped":
            self._log.info("%s: stopped", self.name)
        self._set_state("stopped")

    def data_seen(self) -> None:
        """Say that data arrived (any thread): ends a stale spell, feeds the staleness watch."""
        self._last_data = time.monotonic()
        if self._stale_since_ns is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._fresh)

    def request_reconnect(self, reason: str) -> None:
        """Drop the current session and connect again (any thread); ``reason`` becomes the gap's."""
        self._reconnect_reason = reason
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    # ------------------------------------------------------------------ the loop
    def _remaining(self, at_most: float) -> float:
        """``at_most`` seconds, or less if stop() set a deadline that comes sooner."""
        if self._deadline is None or self._loop is None:
            return at_most
        return max(0.0, min(at_most, self._deadline - self._loop.time()))

    async def _open(self) -> Connection | None:
        """One connect attempt, abandoned when stop() is called; None when stopping."""
        attempt: asyncio.Future[Connection] = asyncio.ensure_future(self._connect())
        stopping: asyncio.Future[object] = asyncio.ensure_future(self._stopping.wait())
        try:
            done, _ = await asyncio.wait(
                {cast("asyncio.Future[object]", attempt), stopping},
                timeout=self._connect_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            stopping.cancel()
            if not attempt.done():
                attempt.cancel()
        if attempt in done:
            connection: Connection = attempt.result()  # raises what connect raised
            if self._stopping.is_set():
                await self._close(connection)
                return None
            return connection
        if self._stopping.is_set():
            await asyncio.wait({attempt}, timeout=self._remaining(1.0))
            if attempt.done() and not attempt.cancelled() and attempt.exception() is None:
                await self._close(attempt.result())
            return None
        # let the cancelled attempt clean up
        await asyncio.wait({attempt}, timeout=self._remaining(1.0))
        raise TimeoutError(f"no connection within {self._connect_timeout_s:g} s")

    async def _supervise(self) -> None:
        down_since: int | None = None
        reason = "never connected"
        outage_logged = False
        while not self._stopping.is_set():
            self._set_state("connecting")
            connection: Connection | None = None
            internal: Exception | None = None
            attention = False
            try:
                connection = await self._open()
            except self._errors as err:
                reason, attention = describe_error(err), isinstance(err, NeedsAttention)
            except NeedsAttention as err:
                reason, attention = describe_error(err), True
            except Exception as err:  # top-level supervisor: a bug must not end the adapter
                reason, internal = self._internal(err), err
            if self._stopping.is_set():
                break
            if connection is not None:
                self.sessions += 1
                now = self._context.clock()
                if down_since is not None:
                    self._log.info(
                        "%s: connected again after %.1f s (%s)",
                        self.name,
                        (now - down_since) / 1e9,
                        reason,
                    )
                    for machine in self.machines:
                        self._context.emitter.gap(machine, down_since, now, reason)
                    down_since = None
                else:
                    self._log.info("%s: connected", self.name)
                self._last_failure = None
                outage_logged = False
                self._set_state("connected")
                self.backoff.reset()
                reason, internal, silent_since = await self._serve(connection)
                if self._stopping.is_set():
                    break
                if silent_since is not None:
                    down_since = silent_since  # the gap covers the silence before the drop
            if down_since is None:
                down_since = self._context.clock()
            self.failures += 1
            self._set_state("disconnected")
            delay = self.backoff.next_delay()
            if reason == self._last_failure:
                self._log.debug("%s: %s again; retrying in %.1f s", self.name, reason, delay)
            elif internal is not None:
                self._log.error(
                    "%s: %s; retrying in %.1f s", self.name, reason, delay, exc_info=internal
                )
            elif attention or not outage_logged:
                self._log.warning("%s: %s; retrying in %.1f s", self.name, reason, delay)
            else:  # still away, for another reason: the outage is already in the log
                self._log.debug("%s: %s; retrying in %.1f s", self.name, reason, delay)
            outage_logged = True
            self._last_failure = reason
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)

    async def _serve(self, connection: Connection) -> tuple[str, Exception | None, int | None]:
        """Run one session until it ends, a reconnect is asked for, or the adapter stops.

        Returns why it ended, the unexpected exception if that was the cause, and when the
        source went silent if the session was stale when it ended.
        """
        self._last_data = time.monotonic()
        self._reconnect_reason = None
        self._wake.clear()
        run = asyncio.create_task(connection.run(), name=f"session:{self.name}")
        watch = asyncio.create_task(self._watch(), name=f"watch:{self.name}")
        reason = "session ended"
        internal: Exception | None = None
        try:
            await asyncio.wait({run, watch}, return_when=asyncio.FIRST_COMPLETED)
            if run.done():
                try:
                    reason = run.result()
                except self._errors as err:
                    reason = describe_error(err)
                except Exception as err:  # top-level supervisor
                    reason, internal = self._internal(err), err
            else:
                reason = self._reconnect_reason or "stopping"
        finally:
            for task in (run, watch):
                task.cancel()
            await asyncio.wait({run, watch}, timeout=self._remaining(5.0))
            await self._close(connection)
        silent_since, self._stale_since_ns = self._stale_since_ns, None
        return reason, internal, silent_since

    async def _close(self, connection: Connection) -> None:
        """Close a session, within 5 s (less when stopping); a failure is only worth debug."""
        quiet_errors: tuple[type[BaseException], ...] = (TimeoutError, *self._errors)
        try:
            await asyncio.wait_for(connection.close(), self._remaining(5.0))
        except quiet_errors as err:
            self._log.debug("%s: closing the session: %s", self.name, describe_error(err))
        except Exception as err:  # top-level supervisor
            self.internal_errors += 1
            self._log.error("%s: unexpected error closing the session", self.name, exc_info=err)

    async def _watch(self) -> None:
        """Wake on stop or a reconnect request; mark the connection stale when it goes quiet."""
        while True:
            if self._stopping.is_set() or self._reconnect_reason is not None:
                return
            self._wake.clear()
            if self._stale_after_s is not None and self._stale_since_ns is None:
                quiet = time.monotonic() - self._last_data
                if quiet >= self._stale_after_s:
                    self._stale_since_ns = self._context.clock() - int(quiet * 1e9)
                    self._log.warning("%s: no data for %.0f s", self.name, quiet)
                    self._set_state("stale")
                    if self._reconnect_when_stale:
                        self._reconnect_reason = f"no data for {quiet:.0f} s"
                        return
            wait = self._stale_after_s / 4 if self._stale_after_s else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    def _fresh(self) -> None:
        """Data after a stale spell: the silence becomes a gap, the connection is live again."""
        since = self._stale_since_ns
        if since is None or self._state != "stale":
            return
        self._stale_since_ns = None
        now = self._context.clock()
        reason = f"no data for {(now - since) / 1e9:.0f} s"
        self._log.info("%s: data again after %s", self.name, reason.removeprefix("no data for "))
        for machine in self.machines:
            self._context.emitter.gap(machine, since, now, reason)
        self._set_state("connected")

    def _set_state(self, state: ConnectionState) -> None:
        if state != self._state:
            self._state = state
            self._context.emitter.connection(self.name, state)
            if self._devices is not None:
                if state == "connected":
                    self._devices.resume()
                elif state in ("connecting", "disconnected"):
                    self._devices.pause()

    def _device_watch_ended(self, task: asyncio.Task[None]) -> None:
        """The device watch ends only when cancelled; say so loudly if it ever does not."""
        if not task.cancelled() and self._device_task is task:
            self.internal_errors += 1
            self._log.error(
                "%s: the device staleness watch ended", self.name, exc_info=task.exception()
            )

    def _internal(self, err: Exception) -> str:
        """Count an unexpected exception; the caller logs it once, with its traceback."""
        self.internal_errors += 1
        return f"internal error: {describe_error(err)}"
