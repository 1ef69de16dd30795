"""The connection supervisor: states, backoff, gaps, staleness, reconnects, bounded stop, logs.

The unit under test is the supervisor, so the source here is a small in-test double whose
``connect`` and ``run`` do what each test scripts (fail, hang, end, raise).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from microfactory.gateway.sdk import AdapterContext, Backoff, Connection, ConnectionSupervisor
from microfactory.gateway.testing import RecordingEmitter, wait_until

MACHINES = frozenset({"mill-1", "lathe-2"})
FAST = Backoff(initial_s=0.02, max_s=0.05, jitter=0.0)


class Source:
    """A scripted source: ``up`` says whether connect succeeds; sessions end on ``drop``."""

    def __init__(self) -> None:
        self.up = True
        self.hang_connect = False
        self.hang_run = False
        self.raise_in_connect: Exception | None = None
        self.connects = 0
        self.closed = 0
        self._drop: asyncio.Event | None = None

    async def connect(self) -> Connection:
        self.connects += 1
        if self.raise_in_connect is not None:
            raise self.raise_in_connect
        if self.hang_connect:
            await asyncio.Event().wait()
        if not self.up:
            raise ConnectionRefusedError("connection refused")
        self._drop = asyncio.Event()
        return _Session(self, self._drop)

    def drop(self) -> None:
        """The source goes away: the running session ends with an error."""
        self.up = False
        if self._drop is not None:
            self._drop.set()


class _Session:
    def __init__(self, source: Source, drop: asyncio.Event) -> None:
        self._source = source
        self._drop = drop

    async def run(self) -> str:
        if self._source.hang_run:
            await asyncio.Event().wait()  # a session that ignores everything but cancellation
        await self._drop.wait()
        raise ConnectionResetError("connection reset by peer")

    async def close(self) -> None:
        self._source.closed += 1


def _supervisor(
    tmp_path: Path,
    source: Source,
    clock: Callable[[], int] = time.time_ns,
    **kwargs: object,
) -> tuple[ConnectionSupervisor, RecordingEmitter]:
    emitter = RecordingEmitter(adapter="src", machines=MACHINES)
    context = AdapterContext(
        site="test",
        machines=MACHINES,
        emitter=emitter,
        logger=logging.getLogger("microfactory.test.supervisor"),
        state_dir=tmp_path,
        clock=clock,
    )
    options: dict[str, object] = {"backoff": FAST, "connect_timeout_s": 1.0, **kwargs}
    sup = ConnectionSupervisor(
        context,
        name="src",
        machines=MACHINES,
        connect=source.connect,
        **options,  # type: ignore[arg-type]
    )
    return sup, emitter


def _squeeze(states: list[str]) -> list[str]:
    return [s for i, s in enumerate(states) if i == 0 or states[i - 1] != s]


async def test_states_in_order_and_one_gap_per_machine_after_an_outage(tmp_path: Path) -> None:
    source = Source()
    sup, emitter = _supervisor(tmp_path, source)
    await sup.start()
    await wait_until(lambda: sup.state == "connected", 5, "first connect")
    source.drop()
    await wait_until(lambda: sup.state == "disconnected", 5, "the drop noticed")
    await asyncio.sleep(0.2)  # several failed attempts
    assert sup.sessions == 1
    source.up = True
    await wait_until(lambda: sup.state == "connected" and sup.sessions == 2, 5, "reconnect")
    await sup.stop(1.0)

    states = _squeeze(list(emitter.states))
    assert states[:2] == ["connecting", "connected"]
    assert states[-2:] == ["connected", "stopped"]
    assert "disconnected" in states and states.count("connected") == 2
    assert {g.machine for g in emitter.gaps} == MACHINES and len(emitter.gaps) == 2
    for gap in emitter.gaps:
        assert gap.reason == "connection refused"
        assert 0.15e9 < gap.end_ns - gap.start_ns < 5e9
    assert source.closed == 2, "every session is closed once: after it ended, and on stop"
    assert not emitter.violations


def test_backoff_doubles_up_to_its_cap_with_jitter() -> None:
    plain = Backoff(initial_s=0.5, max_s=4.0, factor=2.0, jitter=0.0)
    assert [plain.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    plain.reset()
    assert plain.next_delay() == 0.5

    jittered = Backoff(initial_s=1.0, max_s=8.0, jitter=0.2)
    firsts = set()
    for _ in range(50):
        jittered.reset()
        first = jittered.next_delay()
        assert 0.8 <= first <= 1.2
        firsts.add(first)
    assert len(firsts) > 10, "jitter must spread retries, not repeat one delay"
    for _ in range(20):
        assert jittered.next_delay() <= 8.0, "the cap holds with jitter too"


async def test_failures_back_off_instead_of_spinning(tmp_path: Path) -> None:
    source = Source()
    source.up = False
    sup, _ = _supervisor(tmp_path, source, backoff=Backoff(initial_s=0.1, max_s=0.4, jitter=0.0))
    await sup.start()
    await asyncio.sleep(1.0)  # delays 0.1, 0.2, 0.4, 0.4: five attempts at most
    await sup.stop(1.0)
    assert 3 <= source.connects <= 5, f"{source.connects} connects in 1 s"


async def test_stale_connection_is_reported_and_its_silence_becomes_a_gap(tmp_path: Path) -> None:
    source = Source()
    sup, emitter = _supervisor(tmp_path, source, stale_after_s=0.2)
    await sup.start()
    await wait_until(lambda: sup.state == "connected", 5, "connect")
    sup.data_seen()
    await wait_until(lambda: sup.state == "stale", 5, "stale after 0.2 s without data")
    assert not emitter.gaps, "no gap while the silence lasts: its end is unknown"
    await asyncio.sleep(0.2)
    sup.data_seen()
    await wait_until(lambda: sup.state == "connected", 5, "live again on data")
    assert len(emitter.gaps) == 2
    gap = emitter.gaps[0]
    assert gap.reason.startswith("no data for")
    assert gap.end_ns - gap.start_ns >= 0.35e9
    assert sup.sessions == 1, "stale alone does not reconnect"
    await sup.stop(1.0)
    assert _squeeze(list(emitter.states)) == [
        "connecting",
        "connected",
        "stale",
        "connected",
        "stopped",
    ]


async def test_stale_connection_is_dropped_when_asked_and_the_gap_covers_the_silence(
    tmp_path: Path,
) -> None:
    source = Source()
    sup, emitter = _supervisor(tmp_path, source, stale_after_s=0.2, reconnect_when_stale=True)
    await sup.start()
    await wait_until(lambda: sup.state == "connected", 5, "connect")
    silent_from = time.time_ns()
    await wait_until(lambda: sup.sessions >= 2, 5, "a reconnect forced by the silence")
    await wait_until(lambda: len(emitter.gaps) >= 2, 5, "the gaps of the silence")
    await sup.stop(1.0)
    gap = emitter.gaps[0]
    assert gap.reason.startswith("no data for")
    assert gap.start_ns <= silent_from + 0.05e9, "the gap starts when the data stopped"
    assert "stale" in emitter.states


async def test_request_reconnect_opens_a_new_session_and_reports_its_reason(
    tmp_path: Path,
) -> None:
    source = Source()
    sup, emitter = _supervisor(tmp_path, source)
    await sup.start()
    await wait_until(lambda: sup.state == "connected", 5, "connect")
    sup.request_reconnect("subscription status changed: BadTimeout")
    await wait_until(lambda: sup.sessions == 2 and sup.state == "connected", 5, "reconnect")
    await sup.stop(1.0)
    assert source.closed == 2
    assert {g.reason for g in emitter.gaps} == {"subscription status changed: BadTimeout"}


@pytest.mark.parametrize("hang", ["connect", "run"])
async def test_stop_finishes_within_its_timeout_when_the_source_hangs(
    tmp_path: Path, hang: str
) -> None:
    source = Source()
    source.hang_connect = hang == "connect"
    source.hang_run = hang == "run"
    sup, emitter = _supervisor(tmp_path, source, connect_timeout_s=60.0)
    await sup.start()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await sup.stop(0.5)
    took = time.monotonic() - started
    assert took < 0.6, f"stop(0.5) took {took:.2f} s with {hang} hanging"
    assert emitter.states[-1] == "stopped"
    if hang == "run":
        assert source.closed == 1


async def test_connect_timeout_is_a_failure_and_retried(tmp_path: Path) -> None:
    source = Source()
    source.hang_connect = True
    sup, emitter = _supervisor(tmp_path, source, connect_timeout_s=0.1)
    await sup.start()
    await wait_until(lambda: source.connects >= 3, 5, "retries after connect timeouts")
    await sup.stop(1.0)
    assert "connected" not in emitter.states


async def test_an_unexpected_exception_is_logged_once_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = Source()
    source.raise_in_connect = KeyError("bug")
    sup, emitter = _supervisor(tmp_path, source)
    with caplog.at_level(logging.DEBUG, logger="microfactory.test.supervisor"):
        await sup.start()
        await wait_until(lambda: source.connects >= 4, 5, "retries after the bug")
        source.raise_in_connect = None
        await wait_until(lambda: sup.state == "connected", 5, "connect once the bug is gone")
        await sup.stop(1.0)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None, "the bug is logged with its traceback"
    assert "internal error: KeyError" in errors[0].getMessage()
    assert sup.internal_errors >= 4
    assert {g.reason for g in emitter.gaps} == {"internal error: KeyError: 'bug'"}


async def test_one_log_line_per_state_change_repeats_at_debug(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = Source()
    source.up = False
    sup, _ = _supervisor(tmp_path, source)
    with caplog.at_level(logging.DEBUG, logger="microfactory.test.supervisor"):
        await sup.start()
        await wait_until(lambda: source.connects >= 5, 5, "several refused connects")
        source.up = True
        await wait_until(lambda: sup.state == "connected", 5, "connect")
        await sup.stop(1.0)
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    above_debug = [(lvl, msg) for lvl, msg in lines if lvl != "DEBUG"]
    assert [lvl for lvl, _ in above_debug] == ["WARNING", "INFO", "INFO"], above_debug
    assert "connection refused; retrying in" in above_debug[0][1]
    assert "connected again after" in above_debug[1][1]
    assert above_debug[2][1] == "src: stopped"
    repeats = [msg for lvl, msg in lines if lvl == "DEBUG" and "again; retrying" in msg]
    assert len(repeats) >= 3


async def test_two_supervisors_share_nothing(tmp_path: Path) -> None:
    one_source, two_source = Source(), Source()
    one, one_emitter = _supervisor(tmp_path, one_source)
    two, two_emitter = _supervisor(tmp_path, two_source)
    await one.start()
    await two.start()
    await wait_until(lambda: one.state == two.state == "connected", 5, "both connected")
    one_source.drop()
    await wait_until(lambda: one.state == "disconnected", 5, "one dropped")
    assert two.state == "connected" and not two_emitter.gaps
    await one.stop(1.0)
    assert two.state == "connected"
    await two.stop(1.0)
    assert one_emitter.states[-1] == two_emitter.states[-1] == "stopped"


def test_bad_arguments_are_refused_with_their_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="connect_timeout_s"):
        _supervisor(tmp_path, Source(), connect_timeout_s=0)
    with pytest.raises(ValueError, match="stale_after_s"):
        _supervisor(tmp_path, Source(), stale_after_s=-1.0)
