"""The gateway process: wires adapters → pipeline → spool → sinks and supervises them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from .adapters import adapter_class
from .adapters.base import Adapter
from .config import SiteConfig
from .delivery import Delivery
from .health import Health
from .metrics import MetricsServer
from .pipeline import Pipeline
from .sample import Sample
from .sinks import Sink, build_sinks
from .spool import Spool

if TYPE_CHECKING:
    from .mes_link import MesLink

log = logging.getLogger(__name__)
HEARTBEAT_NS = 2_000_000_000  # how often the spool learns that the gateway is alive


class Gateway:
    """One gateway instance; several may run in one process (tests do), no shared state."""

    def __init__(self, site: SiteConfig, *, extra_sinks: list[Sink] | None = None) -> None:
        self.site = site
        self.health = Health()
        self.sinks: list[Sink] = build_sinks(site) + list(extra_sinks or [])
        self.mes_link: MesLink | None = None
        if site.mes_link is not None:  # context from the MES in, machine events out
            from .mes_link import MesLink

            self.mes_link = MesLink(site)
            self.sinks.append(self.mes_link)
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
            ensure = getattr(sink, "ensure_database", None)
            if ensure is not None:
                await ensure()
        self.deliveries = [Delivery(s, self.spool, self.health) for s in self.sinks]
        self.pipeline = Pipeline(self.site, self.spool, self.health, self._spooled)
        if self.mes_link is not None:
            self.pipeline.context = self.mes_link.context
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
        for cfg in self.site.adapters:
            adapter = adapter_class(cfg.type)(cfg, site=self.site, emitter=self.pipeline)
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
