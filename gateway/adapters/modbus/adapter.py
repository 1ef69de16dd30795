"""The Modbus adapter: polls registers over Modbus TCP or RTU and hands samples on.

The connection belongs to :class:`ConnectionSupervisor` (connect, back off, gaps); each
device (unit id) on it to :class:`DeviceWatch` (live / stale, its own gaps). What this
module adds is Modbus:

- reads are planned per (unit id, function, poll interval) and coalesced (:mod:`.plan`);
- an exception response to a coalesced read is answered by reading its registers one by one,
  so only the registers the device refuses are left out; each is logged once, read again
  alone every ``retry_failed_s``, and its recovery logged once. A read refused although each
  of its registers answers alone (a device that refuses reads across unmapped addresses)
  makes that group read without holes, then register by register;
- a device that does not answer is skipped until its next poll, the others still polled;
- a value that is not one (NaN from a float register) is left out and dead-lettered once;
- an unexpected error in one poll is logged once with its traceback and counted, and the
  polling goes on.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusException, ModbusIOException

from ...sdk import (
    AdapterContext,
    Backoff,
    ConnectionSupervisor,
    DeviceWatch,
    RawSample,
    describe_error,
)
from .decode import decode_read
from .plan import GroupKey, Read, coalesce, group_points, single
from .registers import BIT_FUNCTIONS, FUNCTION_WORDS, Point

if TYPE_CHECKING:
    from pymodbus.pdu import ModbusPDU

    from .config import ModbusAdapterConfig

ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, ModbusException)

EXCEPTION_CODES: dict[int, str] = {
    1: "Illegal Function",
    2: "Illegal Data Address",
    3: "Illegal Data Value",
    4: "Server Device Failure",
    5: "Acknowledge",
    6: "Server Device Busy",
    7: "Negative Acknowledge",
    8: "Memory Parity Error",
    10: "Gateway Path Unavailable",
    11: "Gateway Target Device Failed to Respond",
}


ABSENT = frozenset({10, 11})  # a TCP-to-RS-485 gateway saying the device behind it is not there
BUSY = frozenset({5, 6})  # the device is busy now: ask again at the next poll


def exception_words(code: int) -> str:
    """A Modbus exception code as the specification names it: ``02 Illegal Data Address``."""
    return f"exception {code:02d} {EXCEPTION_CODES.get(code, 'unknown exception code')}"


def device_name(unit_id: int) -> str:
    """The device's name in health and logs."""
    return f"unit {unit_id}"


@dataclass(slots=True)
class RegisterProblem:
    """A register left out: refused by the device (``retry_at`` set) or not a value."""

    point: Point
    message: str
    since_ns: int
    count: int = 1
    retry_at: float | None = None  # time.monotonic() of the next lone read; None: read as usual


@dataclass(slots=True)
class _Group:
    """One polling group: its points, its schedule, and how far it may coalesce today."""

    key: GroupKey
    points: list[Point]
    max_gap: int
    individual: bool = False  # the device refuses multi-register reads here
    next_due: float = 0.0
    reads: list[Read] = field(default_factory=list)
    planned_for: frozenset[Point] | None = None  # the refused points the plan left out

    @property
    def unit_id(self) -> int:
        return self.key[0]

    @property
    def interval_s(self) -> float:
        return self.key[2] / 1000


ProblemKey = tuple[int, str, int]  # unit id, function, address


def _key(point: Point) -> ProblemKey:
    return (point.unit_id, point.function, point.address)


Outcome = list[int] | list[bool] | int | None  # values, an exception code, or no answer


class _Session:
    """One open client; ``run`` polls every group when it is due until the connection drops."""

    def __init__(
        self, adapter: ModbusAdapter, client: AsyncModbusTcpClient | AsyncModbusSerialClient
    ):
        self.adapter = adapter
        self._client = client
        self._readers: dict[str, Callable[..., Awaitable[ModbusPDU]]] = {
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
        }

    async def run(self) -> str:
        a = self.adapter
        for group in a.groups:
            group.next_due = 0.0
        while True:
            silent: set[int] = set()  # units that did not answer in this round
            for group in a.groups:
                now = time.monotonic()
                if now < group.next_due:
                    continue
                group.next_due = max(group.next_due + group.interval_s, now)
                if group.unit_id in silent:
                    continue
                try:
                    await self._poll(group, silent)
                except ERRORS:
                    raise
                except Exception as err:  # one poll's bug must not end the polling
                    a.internal_error(f"polling {FUNCTION_WORDS[group.key[1]]}s", err)
            if not self._client.connected:
                return "the connection closed"
            wait = min(g.next_due for g in a.groups) - time.monotonic()
            await asyncio.sleep(max(0.005, wait))

    async def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------------ one group
    async def _poll(self, group: _Group, silent: set[int]) -> None:
        a = self.adapter
        samples: list[RawSample] = []
        for read in a.plan(group):
            if not await self._read(group, read, samples):
                silent.add(group.unit_id)
                break
        else:
            now = time.monotonic()
            for point in group.points:
                problem = a.problems.get(_key(point))
                if problem is None or problem.retry_at is None or problem.retry_at > now:
                    continue
                if not await self._read(group, single(point), samples):
                    silent.add(group.unit_id)
                    break
        if samples:
            a.emitter.submit(samples)

    async def _read(self, group: _Group, read: Read, samples: list[RawSample]) -> bool:
        """Read, decode, and deal with a refusal; False when the device did not answer."""
        a = self.adapter
        outcome, ts_ns = await self._request(read)
        if outcome is None:
            a.no_answer(read.unit_id)
            return False
        if isinstance(outcome, int) and outcome in ABSENT:
            a.no_answer(read.unit_id, exception_words(outcome))
            return False
        a.answered(read.unit_id)
        if isinstance(outcome, list):
            samples.extend(a.decoded(read, outcome, ts_ns))
            return True
        code = outcome
        if code in BUSY:
            a.log.debug("%s: %s: %s", a.config.name, read.where, exception_words(code))
            return True
        if len(read.points) == 1:
            a.refused(read.points[0], code)
            return True
        # a coalesced read refused: find out which of its registers the device refuses
        refused_alone = 0
        for point in read.points:
            alone = single(point)
            outcome, ts_ns = await self._request(alone)
            if outcome is None or (isinstance(outcome, int) and outcome in ABSENT):
                a.no_answer(read.unit_id)
                return False
            if isinstance(outcome, list):
                samples.extend(a.decoded(alone, outcome, ts_ns))
            elif outcome not in BUSY:
                a.refused(point, outcome)
                refused_alone += 1
        if refused_alone == 0:
            a.coalescing_refused(group, read, code)
        return True

    async def _request(self, read: Read) -> tuple[Outcome, int]:
        """The values of one read, its exception code, or None without an answer in time."""
        if not self._client.connected:
            raise ConnectionError("the connection closed")
        a = self.adapter
        a.reads += 1
        try:
            response = await self._readers[read.function](
                read.address, count=read.count, device_id=read.unit_id
            )
        except ModbusIOException:
            return None, 0
        ts_ns = a.clock()
        if response.isError():
            a.exceptions += 1
            return int(getattr(response, "exception_code", 0)), ts_ns
        if read.function in BIT_FUNCTIONS:
            return list(response.bits[: read.count]), ts_ns
        return list(response.registers), ts_ns


class ModbusAdapter:
    """One Modbus connection (TCP or a serial bus) and its devices; many may run at once."""

    def __init__(self, config: ModbusAdapterConfig, context: AdapterContext) -> None:
        self.config = config
        self.emitter = context.emitter
        self.log = context.logger
        self.clock = context.clock
        self.points = config.points()
        self.groups = [
            _Group(key, members, config.max_gap_registers)
            for key, members in group_points(self.points).items()
        ]
        self.problems: dict[ProblemKey, RegisterProblem] = {}
        """Registers left out now, by (unit id, function, address): shown, not just logged."""
        self.reads = 0  # requests sent
        self.exceptions = 0  # exception responses received
        self.internal_errors = 0  # unexpected errors caught in a poll
        self._bugs_logged: set[str] = set()
        self._silent: set[int] = set()  # units whose silence is in the log
        self._unit_machines: dict[int, tuple[str, ...]] = {}
        for p in self.points:
            self._unit_machines.setdefault(p.unit_id, ())
            if p.machine not in self._unit_machines[p.unit_id]:
                self._unit_machines[p.unit_id] += (p.machine,)
        self._unit_stale_s = {
            unit: config.device_stale_after_s([p for p in self.points if p.unit_id == unit])
            for unit in self._unit_machines
        }
        self.devices = DeviceWatch(context, config.name)
        self.supervisor = ConnectionSupervisor(
            context,
            name=config.name,
            machines=sorted({p.machine for p in self.points}),
            connect=self._connect,
            errors=ERRORS,
            connect_timeout_s=config.timeout_s + 5,
            backoff=Backoff(max_s=config.reconnect_max_s),
            devices=self.devices,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect in the background; returns at once."""
        await self.supervisor.start()

    async def stop(self, timeout_s: float) -> None:
        """Close the connection and stop, within ``timeout_s``."""
        await self.supervisor.stop(timeout_s)

    async def _connect(self) -> _Session:
        cfg = self.config
        client: AsyncModbusTcpClient | AsyncModbusSerialClient
        if cfg.transport == "tcp":
            where = f"{cfg.host}:{cfg.port}"
            client = AsyncModbusTcpClient(
                cfg.host or "",
                port=cfg.port,
                name=cfg.name,
                timeout=cfg.timeout_s,
                retries=0,
                reconnect_delay=0,  # reconnecting is the supervisor's job
            )
        else:
            where = cfg.serial_port or ""
            if not await asyncio.to_thread(Path(where).exists):
                raise FileNotFoundError(f"serial port {where} does not exist (adapter unplugged?)")
            client = AsyncModbusSerialClient(
                where,
                baudrate=cfg.baudrate,
                parity=cfg.parity,
                stopbits=cfg.stopbits,
                bytesize=cfg.bytesize,
                name=cfg.name,
                timeout=cfg.timeout_s,
                retries=0,
                reconnect_delay=0,
            )
        try:
            connected = await client.connect()
        except BaseException:
            client.close()
            raise
        if not connected:
            client.close()
            raise ConnectionError(f"cannot connect to {where}")
        return _Session(self, client)

    # ------------------------------------------------------------------ planning
    def plan(self, group: _Group) -> list[Read]:
        """The group's reads, leaving out refused registers and never reading across one."""
        refused = frozenset(
            p
            for p in group.points
            if (problem := self.problems.get(_key(p))) is not None and problem.retry_at is not None
        )
        if refused == group.planned_for:
            return group.reads
        healthy = [p for p in group.points if p not in refused]
        if group.individual:
            reads = [single(p) for p in healthy]
        else:
            barriers = sorted(p.address for p in refused)
            segments: dict[int, list[Point]] = {}
            for p in healthy:
                segments.setdefault(bisect.bisect_left(barriers, p.address), []).append(p)
            reads = []
            for members in segments.values():
                reads += coalesce(
                    members,
                    max_gap=group.max_gap,
                    max_registers=self.config.max_registers_per_read,
                    max_bits=self.config.max_bits_per_read,
                )
        group.reads, group.planned_for = reads, refused
        return reads

    def coalescing_refused(self, group: _Group, read: Read, code: int) -> None:
        """A read refused although its registers answer alone: read this group more finely."""
        if group.max_gap > 0:
            group.max_gap = 0
            how = "reading only contiguous registers together"
        else:
            group.individual = True
            how = "reading its registers one by one"
        group.planned_for = None
        self.log.warning(
            "%s: %s refused as one read (%s) although each register answers alone; %s",
            self.config.name,
            read.where,
            exception_words(code),
            how,
        )

    # ------------------------------------------------------------------ outcomes
    def decoded(
        self, read: Read, values: Sequence[int] | Sequence[bool], ts_ns: int
    ) -> list[RawSample]:
        """Samples of one answered read; problems of single registers noted, once."""
        self.supervisor.data_seen()
        samples: list[RawSample] = []
        for d in decode_read(read, values):
            p = d.point
            if d.problem is not None:
                raw = b"".join(w.to_bytes(2, "big") for w in d.raw)
                self._problem(p, f"{p.where}: {d.problem}; value left out", payload=raw)
                continue
            self._clear(p)
            samples.append(
                RawSample(
                    machine=p.machine,
                    signal=p.signal,
                    value=d.value,
                    unit=p.unit,
                    ts_ns=ts_ns,
                    origin=f"{device_name(p.unit_id)} {p.function} {p.address}",
                )
            )
        return samples

    def refused(self, point: Point, code: int) -> None:
        """The device answered a read of ``point`` alone with an exception code."""
        retry_at = time.monotonic() + self.config.retry_failed_s
        message = (
            f"{point.where} refused: {exception_words(code)}; read again every "
            f"{self.config.retry_failed_s:g} s"
        )
        self._problem(point, message, retry_at=retry_at)

    def answered(self, unit_id: int) -> None:
        """The device answered (values or an exception): it is there."""
        self.supervisor.data_seen()
        self.devices.seen(
            device_name(unit_id),
            self._unit_machines.get(unit_id, ()),
            stale_after_s=self._unit_stale_s.get(unit_id),
        )
        if unit_id in self._silent:
            self._silent.discard(unit_id)
            self.log.info("%s: %s answers again", self.config.name, device_name(unit_id))

    def no_answer(self, unit_id: int, why: str | None = None) -> None:
        """The device did not answer (in time, or its gateway says so); polled again later."""
        if unit_id not in self._silent:
            self._silent.add(unit_id)
            why = why or f"no answer within {self.config.timeout_s:g} s"
            self.log.warning(
                "%s: %s does not answer (%s); polled again at its next interval",
                self.config.name,
                device_name(unit_id),
                why,
            )

    def internal_error(self, what: str, err: Exception) -> None:
        """An unexpected error in a poll: counted, logged once (with its traceback)."""
        self.internal_errors += 1
        text = describe_error(err)
        if text in self._bugs_logged:
            return
        self._bugs_logged.add(text)
        self.log.error("%s: unexpected error %s: %s", self.config.name, what, text, exc_info=err)

    def _problem(
        self,
        point: Point,
        message: str,
        *,
        payload: bytes | None = None,
        retry_at: float | None = None,
    ) -> None:
        key = _key(point)
        problem = self.problems.get(key)
        if problem is not None and problem.message == message:
            problem.count += 1
            problem.retry_at = retry_at
            return
        self.problems[key] = RegisterProblem(point, message, self.clock(), retry_at=retry_at)
        self.log.warning("%s: %s", self.config.name, message)
        if payload is not None:
            origin = f"{device_name(point.unit_id)} {point.function} {point.address}"
            self.emitter.dead_letter(self.config.name, origin, message, payload)

    def _clear(self, point: Point) -> None:
        problem = self.problems.pop(_key(point), None)
        if problem is not None:
            self.log.info("%s: %s reads again", self.config.name, point.where)
