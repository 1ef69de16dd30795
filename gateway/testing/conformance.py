"""The adapter conformance kit: the checks every adapter passes, run by its own package.

An adapter package subclasses :class:`AdapterConformance` in one of its test modules, names
its plugin, the machines its config declares and the bad configs it must refuse, and gives
a ``counterpart`` fixture: its real source (a server, a broker with a publisher, a device)
that the kit starts, stops, restarts and asks for one bad payload::

    from microfactory.gateway.testing import AdapterConformance, BadConfig

    class TestConformance(AdapterConformance):
        plugin = my_adapter.plugin
        machines = frozenset({"press-1"})
        bad_configs = (BadConfig({**GOOD, "url": "ftp://x"}, "url"),)

        @pytest.fixture
        def counterpart(self, tmp_path): return MyDevice(tmp_path)

The pattern is that of pandas' extension-array base tests: the checks live here, written
once; pytest collects them from the subclass. Each check runs its own event loop
(``asyncio.run``), so the kit needs pytest and nothing else (no pytest-asyncio mode).
"""

from __future__ import annotations

import asyncio
import copy
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import pytest
from pydantic import ValidationError

from ..adapters.base import Adapter, AdapterConfigBase, AdapterContext, AdapterPlugin
from .emitter import RecordingEmitter

__all__ = ["AdapterConformance", "BadConfig", "Counterpart", "field_paths", "wait_until"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BadConfig:
    """An adapter config (as in the site file) its model must refuse, naming ``field``.

    ``field`` is the path as ``config check`` prints it, e.g. ``endpoint`` or
    ``nodes[0].unit``; ``id`` names the case in the test report (default: the field).
    """

    config: Mapping[str, Any]
    field: str
    id: str = ""


class Counterpart(Protocol):
    """The adapter's real source, driven by the kit. Created by the ``counterpart`` fixture."""

    def adapter_config(self, name: str) -> dict[str, Any]:
        """A valid config of the adapter named ``name`` (as in a site file) reaching this source."""

    async def start(self) -> None:
        """Start the source, or start it again on the same address after ``stop``.

        While started it sends data the adapter turns into samples, at least every 0.5 s.
        """

    async def stop(self) -> None:
        """Stop the source as an outage does (the address stops answering); idempotent."""

    async def send_bad_payload(self) -> None:
        """Make the source send one payload that must be dead-lettered (by the adapter or the
        pipeline): garbage bytes, a text where a number belongs, a NaN."""


def field_paths(err: ValidationError) -> list[str]:
    """The field paths of a validation error, spelled as ``config check`` prints them."""
    paths = []
    for e in err.errors(include_url=False):
        out = ""
        for part in e["loc"]:
            out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
        paths.append(out)
    return paths


async def wait_until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``check`` until true; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting for: {what}")
        await asyncio.sleep(0.05)


@dataclass(slots=True)
class _Instance:
    adapter: Adapter
    emitter: RecordingEmitter
    config: AdapterConfigBase


class AdapterConformance:
    """Base class of an adapter's conformance tests; subclass it in a ``test_*.py`` module.

    Set ``plugin``, ``machines`` and ``bad_configs``, and give a ``counterpart`` fixture.
    The timing knobs have defaults that suit a source on 127.0.0.1.
    """

    plugin: ClassVar[AdapterPlugin[Any]]
    """The adapter's entry point object, as its package exposes it."""
    machines: ClassVar[frozenset[str]]
    """The machines declared in the site config the adapter runs in (its context)."""
    bad_configs: ClassVar[Sequence[BadConfig]] = ()
    """Configs the model must refuse, each with the field its error must name."""
    stop_timeout_s: ClassVar[float] = 2.0
    """The timeout given to ``stop``; it must return within it (plus scheduling slack)."""
    connect_within_s: ClassVar[float] = 20.0
    """How long the adapter may take to connect, notice an outage, or reconnect."""
    max_clock_skew_s: ClassVar[float] = 120.0
    """How far a sample's timestamp may be from now (the counterpart is a local source)."""

    @pytest.fixture
    def counterpart(self) -> Counterpart:
        """Override in the subclass: the adapter's real source, not started yet."""
        raise NotImplementedError(f"{type(self).__name__} must define a 'counterpart' fixture")

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        """One test per bad config, named after its field (pytest calls this on the class)."""
        if "bad_config" in metafunc.fixturenames:
            cases = list(self.bad_configs)
            metafunc.parametrize("bad_config", cases, ids=[c.id or c.field for c in cases])

    # ------------------------------------------------------------------ the checks: config
    def test_valid_config_validates(self, counterpart: Counterpart) -> None:
        """The counterpart's config is accepted, with the plugin's own ``type``."""
        config = self._config(counterpart, "conformance")
        assert isinstance(config, self.plugin.config_model)
        undeclared = config.machines_referenced() - self.machines
        assert not undeclared, f"machines_referenced() names undeclared machines {undeclared}"

    def test_bad_configs_are_given(self) -> None:
        """Every adapter has at least one field a user can get wrong."""
        assert self.bad_configs, f"{type(self).__name__}.bad_configs is empty"

    def test_config_error_names_the_field(self, bad_config: BadConfig) -> None:
        """A bad config is refused at validation (no connection), naming the field at fault."""
        with pytest.raises(ValidationError) as info:
            self.plugin.config_model.model_validate(dict(bad_config.config))
        paths = field_paths(info.value)
        assert bad_config.field in paths, (
            f"the error should name {bad_config.field!r}; it names {paths}: {info.value}"
        )
        for e in info.value.errors(include_url=False):
            assert str(e["msg"]).strip(), f"an error at {e['loc']} has no message"

    # ------------------------------------------------------------------ the checks: lifecycle
    def test_start_returns_at_once_and_stop_is_bounded_while_source_is_down(
        self, counterpart: Counterpart, tmp_path: Path
    ) -> None:
        """With the source away, ``start`` returns at once, nothing raises, ``stop`` is bounded."""

        async def check() -> None:
            one = self._instance(counterpart, "down", tmp_path)
            started = time.monotonic()
            await one.adapter.start()
            took = time.monotonic() - started
            assert took < 0.5, f"start() took {took:.2f} s with the source down: connect later"
            await asyncio.sleep(1.5)  # a few connect attempts into the void
            assert "connected" not in one.emitter.states, "connected to a source that is down"
            assert one.emitter.count() == 0
            await self._stop(one)

        self._run(check())

    def test_stop_within_timeout_while_connected(
        self, counterpart: Counterpart, tmp_path: Path
    ) -> None:
        """Connected and receiving, ``stop`` returns within its timeout and nothing follows."""

        async def check() -> None:
            await counterpart.start()
            try:
                one = self._instance(counterpart, "up", tmp_path)
                await one.adapter.start()
                await self._flowing(one, "samples from the running source")
                await self._stop(one)
                after = one.emitter.count()
                await asyncio.sleep(0.5)
                assert one.emitter.count() == after, "samples submitted after stop() returned"
            finally:
                await counterpart.stop()

        self._run(check())

    def test_reconnects_after_the_source_restarts_and_reports_the_gap(
        self, counterpart: Counterpart, tmp_path: Path
    ) -> None:
        """Source stops, starts again: the adapter reconnects by itself and reports a gap."""

        async def check() -> None:
            await counterpart.start()
            one = self._instance(counterpart, "restart", tmp_path)
            try:
                await one.adapter.start()
                await self._flowing(one, "samples before the outage")
                went_down_ns = time.time_ns()
                await counterpart.stop()
                await wait_until(
                    lambda: one.emitter.states[-1] != "connected",
                    self.connect_within_s,
                    "the adapter to notice that its source stopped",
                )
                await asyncio.sleep(0.5)
                came_back_ns = time.time_ns()
                await counterpart.start()
                before = one.emitter.count()
                await wait_until(
                    lambda: one.emitter.states[-1] == "connected" and one.emitter.gaps != [],
                    self.connect_within_s,
                    "the adapter to reconnect after the restart and report a gap",
                )
                await self._flowing(one, "samples after the restart", more_than=before)
                gap = one.emitter.gaps[0]
                assert gap.start_ns <= came_back_ns and gap.end_ns >= went_down_ns, (
                    f"the gap {gap} does not cover the outage [{went_down_ns}, {came_back_ns}]"
                )
                await self._stop(one)
            finally:
                await counterpart.stop()

        self._run(check())

    # ------------------------------------------------------------------ the checks: data
    def test_samples_have_utc_ns_timestamps_and_declared_machines(
        self, counterpart: Counterpart, tmp_path: Path
    ) -> None:
        """Every sample: a declared machine, ``ts_ns`` int UTC ns near now (or None)."""

        async def check() -> None:
            await counterpart.start()
            try:
                one = self._instance(counterpart, "samples", tmp_path)
                await one.adapter.start()
                await self._flowing(one, "a few samples", more_than=5)
                await self._stop(one)
            finally:
                await counterpart.stop()
            now = time.time_ns()
            skew = int(self.max_clock_skew_s * 1e9)
            for s in one.emitter.samples:
                assert s.ts_ns is None or abs(s.ts_ns - now) < skew, (
                    f"{s.machine}/{s.signal} ts_ns={s.ts_ns} is not UTC ns near now ({now}): "
                    "seconds, ms or local time?"
                )
            assert not one.emitter.refused, f"good data refused: {one.emitter.refused[:3]}"

        self._run(check())

    def test_two_instances_are_independent(self, counterpart: Counterpart, tmp_path: Path) -> None:
        """Two instances at once each get their data; stopping one leaves the other running,
        and neither changed its module's state (no module-level state)."""

        async def check() -> None:
            module = sys.modules[self.plugin.load().__module__]
            before = _mutable_globals(module)
            await counterpart.start()
            try:
                one = self._instance(counterpart, "one", tmp_path)
                two = self._instance(counterpart, "two", tmp_path)
                await one.adapter.start()
                await two.adapter.start()
                await self._flowing(one, "samples in instance one")
                await self._flowing(two, "samples in instance two")
                await self._stop(one)
                count = two.emitter.count()
                await self._flowing(two, "instance two still receiving", more_than=count)
                await self._stop(two)
            finally:
                await counterpart.stop()
            changed = sorted(k for k, v in _mutable_globals(module).items() if before.get(k) != v)
            assert not changed, f"module {module.__name__} keeps state in {changed}"

        self._run(check())

    def test_bad_payload_is_dead_lettered_not_raised(
        self, counterpart: Counterpart, tmp_path: Path
    ) -> None:
        """A payload that cannot be data is a dead letter with a reason; data keeps flowing."""

        async def check() -> None:
            await counterpart.start()
            try:
                one = self._instance(counterpart, "bad", tmp_path)
                await one.adapter.start()
                await self._flowing(one, "samples before the bad payload")
                await counterpart.send_bad_payload()
                await wait_until(
                    lambda: bool(one.emitter.dead_letters or one.emitter.refused),
                    self.connect_within_s,
                    "a dead letter (from the adapter, or a sample the pipeline refuses)",
                )
                count = one.emitter.count()
                await self._flowing(one, "samples after the bad payload", more_than=count)
                assert one.emitter.states[-1] == "connected"
                await self._stop(one)
            finally:
                await counterpart.stop()
            for letter in one.emitter.dead_letters:
                assert letter.reason.strip()
            for refused in one.emitter.refused:
                assert refused.reason.strip()

        self._run(check())

    # ------------------------------------------------------------------ helpers
    def _config(self, counterpart: Counterpart, name: str) -> AdapterConfigBase:
        data = copy.deepcopy(counterpart.adapter_config(name))
        config: AdapterConfigBase = self.plugin.config_model.model_validate(data)
        assert config.name == name, f"adapter_config({name!r}) gave name {config.name!r}"
        return config

    def _instance(self, counterpart: Counterpart, name: str, tmp_path: Path) -> _Instance:
        config = self._config(counterpart, name)
        emitter = RecordingEmitter(adapter=name, machines=self.machines, ack_delay_s=0.01)
        context = AdapterContext(
            site="conformance",
            machines=self.machines,
            emitter=emitter,
            logger=logging.getLogger(f"microfactory.conformance.{name}"),
            state_dir=tmp_path / "adapters" / name,
        )
        context.state_dir.mkdir(parents=True, exist_ok=True)
        return _Instance(self.plugin.load()(config, context), emitter, config)

    async def _flowing(self, one: _Instance, what: str, more_than: int = 0) -> None:
        await wait_until(
            lambda: one.emitter.count() > more_than,
            self.connect_within_s,
            f"{what} ({one.config.name})",
        )

    async def _stop(self, one: _Instance) -> None:
        started = time.monotonic()
        await one.adapter.stop(self.stop_timeout_s)
        took = time.monotonic() - started
        assert took < self.stop_timeout_s + 0.5, (
            f"stop({self.stop_timeout_s}) took {took:.2f} s ({one.config.name})"
        )
        assert one.emitter.states and one.emitter.states[-1] == "stopped", (
            f"the last state reported should be 'stopped', got {one.emitter.states[-3:]}"
        )
        assert not one.emitter.violations, "emitter contract broken:\n" + "\n".join(
            one.emitter.violations
        )

    def _run(self, check: Coroutine[Any, Any, None]) -> None:
        """Run one check in a loop of its own; an exception lost in a task fails the test."""
        lost: list[str] = []

        async def main() -> None:
            asyncio.get_running_loop().set_exception_handler(
                lambda _loop, ctx: lost.append(str(ctx.get("exception") or ctx.get("message")))
            )
            await check

        asyncio.run(main())
        assert not lost, f"exceptions lost in background tasks: {lost}"


def _mutable_globals(module: Any) -> dict[str, Any]:
    """Copies of a module's mutable globals (dicts, lists, sets), to see if running changed them."""
    out: dict[str, Any] = {}
    for name, value in vars(module).items():
        if isinstance(value, dict | list | set | bytearray) and not name.startswith("__"):
            try:
                out[name] = copy.deepcopy(value)
            except Exception:
                out[name] = repr(value)
    return out
