"""The gateway process: wires adapters → pipeline → spool → sinks and supervises them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from .adapters import load_adapter
from .adapters.base import Adapter, AdapterContext
from .config import SiteConfig
from .delivery import Delivery
from .health import Health
from .metrics import MetricsServer
from .pipeline import Pipeline
from .sample import Sample
from .sinks import ContextSource, Sink, build_sinks
from .spool import Spool

log = logging.getLogger(__name__)
HEARTBEAT_NS = 2_000_000_000  # how often the spool learns that the gateway is alive


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

    async def start(self) -> None:
        await self.spool.open()
        for sink in self.sinks:
            await sink.open()
            await sink.ensure_database()
        self.deliveries = [Delivery(s, self.spool, self.health) for s in self.sinks]
        self.pipeline = Pipeline(self.site, self.spool, self.health, self._spooled)
        for sink in self.sinks:
            if isinstance(sink, ContextSource):  # the MES link: context from the MES in
                self.pipeline.context = sink.context

                def context_refused(source: ContextSource = sink) -> dict[str, int]:
                    return source.refused

                self.health.context_refused = context_refused
        self._tasks.append(asyncio.create_task(self.pipeline.run(), name="pipeline"))
        for d in self.deliveries:
            self._tasks.append(asyncio.create_task(d.run(), name=f"sink:{d.sink.name}"))
        if self.site.health.enabled:
            self.metrics = MetricsServer(
                self.site.health,
                self.health,
                self.site.spool.path,
                [s.name for s in self.sinks],
                self.spool.depth,
            )
            self.metrics.start()
        await self._report_own_downtime(self.pipeline)
        self._heartbeat = asyncio.create_task(self._heartbeats(), name="heartbeat")
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
        last = await self.spool.heartbeat(now)
        if last is not None and now - last > HEARTBEAT_NS * 2:
            for machine in self.site.machines:
                pipeline.gap(machine.id, last, now, "gateway was not running")

    async def _heartbeats(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                await asyncio.sleep(HEARTBEAT_NS / 1e9)
                await self.spool.heartbeat(time.time_ns())

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
            await self.spool.heartbeat(time.time_ns())  # a clean stop: the gap starts now
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
