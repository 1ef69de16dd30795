"""The OPC UA adapter: one session per server, data-change subscriptions and polling.

It supervises its own session instead of relying on asyncua's ``auto_reconnect``: after any
failure (server restart, network loss, a watchdog read timing out) it throws the session
away, reconnects with capped backoff, resolves namespace URIs again (indexes may change on
restart), creates exactly one new subscription, and reports the outage as a gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError

from ...sample import Quality, RawSample
from ..base import AdapterContext
from .config import NodeSpec, OpcUaAdapterConfig

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ns(dt: datetime | None) -> int | None:
    if dt is None:
        return None
    if dt.tzinfo is None:  # asyncua hands out naive UTC in some versions
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def quality_of(status: ua.StatusCode | None) -> Quality:
    if status is None or status.is_good():
        return "good"
    return "uncertain" if status.is_uncertain() else "bad"


def _scaled(value: Any, spec: NodeSpec) -> Any:
    if (
        (spec.scale != 1.0 or spec.offset != 0.0)
        and isinstance(value, int | float)
        and not isinstance(value, bool)
    ):
        return value * spec.scale + spec.offset
    return value


class _Handler:
    """Receives data changes from asyncua and hands them on once per publish response."""

    def __init__(self, adapter: OpcUaAdapter, specs: dict[ua.NodeId, NodeSpec]) -> None:
        self._adapter = adapter
        self._specs = specs
        self._pending: list[RawSample] = []
        self._loop = asyncio.get_running_loop()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        spec = self._specs.get(node.nodeid)
        if spec is None:
            return
        dv = data.monitored_item.Value
        ts = to_ns(dv.SourceTimestamp) or to_ns(dv.ServerTimestamp)
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(
            RawSample(
                self._adapter.config.machine,
                spec.signal,
                _scaled(val, spec),
                spec.unit,
                ts,
                quality_of(dv.StatusCode),
                spec.node,
            )
        )
        self._adapter.notifications += 1

    def status_change_notification(self, status: Any) -> None:
        log.warning("opcua adapter %s: subscription status %s", self._adapter.config.name, status)
        self._adapter.request_reconnect(f"subscription status changed: {status}")

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._adapter.emitter.submit(batch)


class OpcUaAdapter:
    def __init__(self, config: OpcUaAdapterConfig, context: AdapterContext) -> None:
        self.config = config
        self.emitter = context.emitter
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._reconnect_reason = ""
        self.notifications = 0
        self.sessions = 0  # sessions opened; each holds exactly one subscription

    async def start(self) -> None:
        self._task = asyncio.create_task(self._supervise(), name=f"opcua:{self.config.name}")

    async def stop(self, timeout_s: float) -> None:
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self.emitter.connection(self.config.name, "stopped")

    def request_reconnect(self, reason: str) -> None:
        self._reconnect_reason = reason
        self._reconnect.set()

    async def _supervise(self) -> None:
        cfg = self.config
        delay = 0.5
        down_since: int | None = None
        reason = "never connected"
        while not self._stopping.is_set():
            self.emitter.connection(cfg.name, "connecting")
            client = Client(cfg.endpoint, timeout=cfg.timeout_s)
            client.session_timeout = 60_000  # ms; a dead session is freed by the server soon
            try:
                await asyncio.wait_for(client.connect(), cfg.timeout_s * 2)
                self.sessions += 1
                await self._subscribe(client)
                self.emitter.connection(cfg.name, "connected")
                log.info("opcua adapter %s: connected to %s", cfg.name, cfg.endpoint)
                if down_since is not None:
                    self.emitter.gap(cfg.machine, down_since, time.time_ns(), reason)
                    down_since = None
                delay = 0.5
                reason = await self._watch(client)
            except (
                OSError,
                TimeoutError,
                ConnectionError,
                UaError,
                asyncio.IncompleteReadError,
            ) as err:
                reason = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
            finally:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.disconnect(), 2.0)
                with contextlib.suppress(Exception):
                    client.disconnect_socket()
            if self._stopping.is_set():
                break
            if down_since is None:
                down_since = time.time_ns()
            self.emitter.connection(cfg.name, "disconnected")
            log.warning("opcua adapter %s: %s; reconnecting in %.1fs", cfg.name, reason, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
            delay = min(delay * 2, cfg.reconnect_max_s)

    async def _resolve(self, client: Client) -> dict[ua.NodeId, NodeSpec]:
        namespaces: dict[str, int] = {}
        out: dict[ua.NodeId, NodeSpec] = {}
        for spec in self.config.nodes:
            uri, kind, ident = spec.parts()
            uri = uri or self.config.namespace_uri
            index = 0
            if uri is not None:
                if uri not in namespaces:
                    try:
                        namespaces[uri] = await client.get_namespace_index(uri)
                    except ValueError as err:
                        raise UaError(f"server has no namespace {uri!r}") from err
                index = namespaces[uri]
            identifier: Any = int(ident) if kind == "i" else ident
            out[ua.NodeId(identifier, ua.Int16(index))] = spec
        return out

    async def _subscribe(self, client: Client) -> None:
        specs = await self._resolve(client)
        handler = _Handler(self, specs)
        subscribed = [n for n, s in specs.items() if s.mode == "subscribe"]
        if subscribed:
            sub = await client.create_subscription(self.config.publishing_interval_ms, handler)
            by_interval: dict[float, list[Node]] = {}
            for node_id in subscribed:
                by_interval.setdefault(specs[node_id].sampling_interval_ms, []).append(
                    client.get_node(node_id)
                )
            for interval, nodes in by_interval.items():
                results = await sub.subscribe_data_change(
                    nodes,
                    queuesize=self.config.queue_size,
                    sampling_interval=ua.Double(interval),
                )
                for node, result in zip(
                    nodes, results if isinstance(results, list) else [results], strict=True
                ):
                    if isinstance(result, ua.StatusCode):
                        raise UaError(f"cannot monitor {node.nodeid}: {result}")
        self._polled = [
            (client.get_node(n), specs[n]) for n, s in specs.items() if s.mode == "poll"
        ]

    async def _watch(self, client: Client) -> str:
        """Poll what must be polled and probe the session; return why it ended."""
        cfg = self.config
        next_poll = {id(spec): 0.0 for _, spec in self._polled}
        self._reconnect.clear()
        while not self._stopping.is_set():
            if self._reconnect.is_set():
                return self._reconnect_reason
            now = time.monotonic()
            for node, spec in self._polled:
                if now >= next_poll[id(spec)]:
                    next_poll[id(spec)] = now + spec.poll_interval_ms / 1000
                    dv = await asyncio.wait_for(node.read_data_value(), cfg.timeout_s)
                    ts = to_ns(dv.SourceTimestamp) or to_ns(dv.ServerTimestamp) or time.time_ns()
                    value = dv.Value.Value if dv.Value is not None else None
                    self.emitter.submit(
                        [
                            RawSample(
                                cfg.machine,
                                spec.signal,
                                _scaled(value, spec),
                                spec.unit,
                                ts,
                                quality_of(dv.StatusCode),
                                spec.node,
                            )
                        ]
                    )
            # Watchdog: a blackholed network never closes the socket, a read timing out does.
            await asyncio.wait_for(client.nodes.server_state.read_value(), cfg.timeout_s)
            wait = cfg.watchdog_s
            if self._polled:
                wait = min(wait, max(0.01, min(next_poll.values()) - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait)
        return "stopping"
