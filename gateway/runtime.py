"""The gateway process: wires adapters → pipeline → spool → sinks and supervises them.

Every background task (the pipeline, each sink's delivery, the heartbeat) runs under
:meth:`Gateway._supervise`: a task that ends with an exception is logged once with its
traceback, counted in ``health.task_failures``, and started again after a backoff. A task
that keeps failing (``MAX_TASK_FAILURES`` within ``TASK_FAILURE_WINDOW_S``) sets
:attr:`Gateway.failed`: ``microfactory gateway`` then stops and exits with
``EXIT_TASKS_FAILING`` so that systemd restarts the process. Never a silent zombie.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from .adapters import load_adapter
from .adapters.base import Adapter, AdapterContext
from .config import SiteConfig
from .delivery import Backoff, Delivery
from .health import Health
from .healthz import HealthCheck
from .metrics import MetricsServer
from .notify import Notifier
from .pipeline import Pipeline
from .sample import Sample
from .sinks import ContextSource, Sink, build_sinks
from .spool import Spool, SpoolDiskError

log = logging.getLogger(__name__)
HEARTBEAT_NS = 2_000_000_000  # how often the spool learns that the gateway is alive
MAX_TASK_FAILURES = 5  # this many failures of one task ...
TASK_FAILURE_WINDOW_S = 300.0  # ... within this time: the process gives up (systemd restarts)
EXIT_TASKS_FAILING = 3  # exit status of `microfactory gateway` when a task keeps failing


class Gateway:
    """One gateway instance; several may run in one process (tests do), no shared state."""

    def __init__(
        self,
        site: SiteConfig,
        *,
        extra_sinks: list[Sink] | None = None,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        """``clock`` is what adapters stamp receive times with (UTC ns): the wall clock.

        A simulated workshop in the same process hands its own clock, so a device without
        timestamps (a Modbus meter) read at some instant of the simulated world is stamped
        with that instant, not with the wall time, whatever the simulation's speed.
        """
        self._clock = clock
        self.site = site
        self.health = Health()
        self.sinks: list[Sink] = build_sinks(site) + list(extra_sinks or [])
        self.spool = Spool(site.spool, [s.name for s in self.sinks])
        self.adapters: list[Adapter] = []
        self.deliveries: list[Delivery] = []
        self.pipeline: Pipeline | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._started = False
        self._heartbeat: asyncio.Task[None] | None = None
        self.metrics: MetricsServer | None = None
        # set when a background task keeps failing: the process should exit and be restarted
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self._downtime_from: int | None = None  # start time, while the spool could not say

    async def start(self) -> None:
        try:
            await self.spool.open()
            open_error: SpoolDiskError | None = None
        except SpoolDiskError as err:  # a full disk at start: run, report, recover by itself
            open_error = err
        for sink in self.sinks:
            await sink.open()
            await sink.ensure_database()
        self.deliveries = [Delivery(s, self.spool, self.health) for s in self.sinks]
        self.pipeline = Pipeline(self.site, self.spool, self.health, self._spooled)
        if open_error is not None:
            self.pipeline.disk.failed(open_error.reason, full=open_error.full)
        for sink in self.sinks:
            if isinstance(sink, ContextSource):  # the MES link: context from the MES in
                self.pipeline.context = sink.context

                def context_refused(source: ContextSource = sink) -> dict[str, int]:
                    return source.refused

                self.health.context_refused = context_refused
        self._tasks.append(self._spawn("pipeline", self.pipeline.run))
        for d in self.deliveries:
            self._tasks.append(self._spawn(f"sink:{d.sink.name}", d.run))
        if self.site.health.enabled:
            self.metrics = MetricsServer(
                self.site.health,
                self.health,
                self.site.spool.path,
                [s.name for s in self.sinks],
                self.spool.depth,
            )
            self.metrics.start()
        names = [s.name for s in self.sinks]
        self.check = HealthCheck(
            self.health, self.site.spool.path, names, self.site.spool.max_age_s
        )
        if self.metrics is not None:
            self.metrics.healthz = self.check.report
        self.notifier = Notifier(self.check, lambda: self._started)  # systemd, when it runs us
        self.notifier.start()
        await self._report_own_downtime(self.pipeline)
        self._heartbeat = self._spawn("heartbeat", self._heartbeats)
        machines = frozenset(m.id for m in self.site.machines)
        for cfg in self.site.adapters:
            context = AdapterContext(
                site=self.site.site,
                machines=machines,
                emitter=self.pipeline,
                logger=logging.getLogger(f"microfactory.gateway.adapters.{cfg.type}.{cfg.name}"),
                state_dir=self.site.spool.path.parent / "adapters" / cfg.name,
                clock=self._clock,
            )
            adapter = load_adapter(cfg.type)(cfg, context)
            self.adapters.append(adapter)
            await adapter.start()
        self._started = True
        log.info(
            "gateway started: site %s, %d machines, %d adapters, sinks %s",
            self.site.site,
            len(self.site.machines),
            len(self.adapters),
            ", ".join(s.name for s in self.sinks) or "none",
        )

    def sink(self, name: str) -> Sink | None:
        """The sink reading the spool under ``name`` (e.g. ``mes_events``), if configured."""
        return next((s for s in self.sinks if s.name == name), None)

    async def _report_own_downtime(self, pipeline: Pipeline) -> None:
        """A gap on every machine for the time this gateway (on this spool) was not running.

        Adapters only see outages while the gateway runs; a stopped or crashed gateway saw
        nothing, and its heartbeat in the spool says since when.
        """
        now = time.time_ns()
        try:
            last = await self.spool.heartbeat(now)
        except SpoolDiskError as err:  # told by the first heartbeat the disk takes
            pipeline.disk.failed(err.reason, full=err.full)
            self._downtime_from = now
            return
        self._gap_since(pipeline, last, now)

    def _gap_since(self, pipeline: Pipeline, last: int | None, now: int) -> None:
        if last is not None and now - last > HEARTBEAT_NS * 2:
            for machine in self.site.machines:
                pipeline.gap(machine.id, last, now, "gateway was not running")

    def _spawn(self, name: str, run: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        return asyncio.create_task(self._supervise(name, run), name=name)

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        """Run ``run`` until it returns; restart it after a failure, or give up (see module)."""
        failures: deque[float] = deque()
        backoff = Backoff(base_s=0.5, cap_s=30.0)
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.health.task_failures[name] += 1
                now = time.monotonic()
                failures.append(now)
                while failures and now - failures[0] > TASK_FAILURE_WINDOW_S:
                    failures.popleft()
                if not failures or len(failures) == 1:
                    backoff.reset()
                if len(failures) >= MAX_TASK_FAILURES:
                    self.failure = (
                        f"task {name} failed {len(failures)} times within "
                        f"{TASK_FAILURE_WINDOW_S:.0f} s (last: {err!r})"
                    )
                    log.critical("%s; giving up so that the service restarts", self.failure)
                    self.failed.set()
                    return
                pause = backoff.next()
                log.error(
                    "task %s failed (%d in %.0f s); restarting it in %.1f s",
                    name,
                    len(failures),
                    TASK_FAILURE_WINDOW_S,
                    pause,
                    exc_info=True,
                )
                await asyncio.sleep(pause)

    async def _heartbeats(self) -> None:
        """Tell the spool we are alive every 2 s, and show life every second.

        A full disk never ends this task: the failed write is reported as the disk state and
        tried again at the next beat.
        """
        assert self.pipeline is not None
        pipeline = self.pipeline
        beat = 0
        while True:
            self.health.beats["heartbeat"] = time.monotonic_ns()
            await asyncio.sleep(1.0)
            beat += 1
            if beat % round(HEARTBEAT_NS / 1e9):
                continue
            now = time.time_ns()
            try:
                last = await self.spool.heartbeat(now)
                await self.spool.maintain()
            except SpoolDiskError as err:
                pipeline.disk.failed(err.reason, full=err.full)
                continue
            if not pipeline.held:
                pipeline.disk.ok()
            if self._downtime_from is not None:
                start, self._downtime_from = self._downtime_from, None
                self._gap_since(pipeline, last, start)

    def _spooled(self, samples: list[Sample]) -> None:
        for d in self.deliveries:
            d.notify()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop adapters, flush the pipeline into the spool, give sinks ``timeout_s`` to drain.

        What a sink cannot take in time stays in the spool and is delivered after restart.
        """
        if not self._started:
            return
        self._started = False
        if hasattr(self, "notifier"):
            self.notifier.stop()  # STOPPING=1: systemd waits for the exit, no watchdog kill
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for adapter in self.adapters:
            await adapter.stop(max(0.5, min(5.0, deadline - loop.time())))
        assert self.pipeline is not None
        self.pipeline.close()
        await self._tasks[0]
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            with contextlib.suppress(SpoolDiskError):  # a clean stop: the gap starts now
                await self.spool.heartbeat(time.time_ns())
        for d in self.deliveries:
            d.stop()
        pending = self._tasks[1:]
        if pending:
            _, not_done = await asyncio.wait(pending, timeout=max(0.1, deadline - loop.time()))
            for task in not_done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for d in self.deliveries:
                left = self.spool.depth(d.sink.name)
                if left:
                    log.warning(
                        "sink %s: %d samples stay spooled for the next start", d.sink.name, left
                    )
        for sink in self.sinks:
            await sink.close()
        await self.spool.close()
        if self.metrics is not None:
            self.metrics.stop()
        log.info("gateway stopped")

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
