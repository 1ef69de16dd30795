"""The OPC UA adapter: one session per server, data-change subscriptions and polling.

The SDK's :class:`ConnectionSupervisor` owns the session's life (connect with capped,
jittered backoff, gaps, stop within a timeout) instead of asyncua's ``auto_reconnect``:
after any failure (server restart, network loss, a watchdog read timing out) the session is
thrown away, and the next one resolves namespace URIs again (indexes may change on restart)
and creates exactly one new subscription. This module only says how to open a session and
what a session does.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.uaerrors import UaError

from ...sdk import (
    AdapterContext,
    Backoff,
    ConnectionSupervisor,
    Quality,
    RawSample,
    datetime_to_ns,
    scaled,
)
from .config import NodeSpec, OpcUaAdapterConfig

# What a session may fail with when the server or the network goes away.
ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ConnectionError,
    UaError,
    asyncio.IncompleteReadError,
)


def quality_of(status: ua.StatusCode | None) -> Quality:
    """OPC UA status code → sample quality."""
    if status is None or status.is_good():
        return "good"
    return "uncertain" if status.is_uncertain() else "bad"


def source_time_ns(dv: ua.DataValue) -> int | None:
    """The value's source time, else the server's, in UTC ns (asyncua may hand out naive UTC)."""
    dt = dv.SourceTimestamp or dv.ServerTimestamp
    return None if dt is None else datetime_to_ns(dt)


def _sample(cfg: OpcUaAdapterConfig, spec: NodeSpec, value: Any, dv: ua.DataValue) -> RawSample:
    return RawSample(
        cfg.machine,
        spec.signal,
        scaled(value, spec.scale, spec.offset),
        spec.unit,
        source_time_ns(dv),
        quality_of(dv.StatusCode),
        spec.node,
    )


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
        if not self._pending:
            self._loop.call_soon(self._flush)
        self._pending.append(_sample(self._adapter.config, spec, val, data.monitored_item.Value))
        self._adapter.notifications += 1

    def status_change_notification(self, status: Any) -> None:
        self._adapter.request_reconnect(f"subscription status changed: {status}")

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            self._adapter.supervisor.data_seen()
            self._adapter.emitter.submit(batch)


class _Session:
    """One connected client holding one subscription; ``run`` polls and probes it."""

    def __init__(self, adapter: OpcUaAdapter, client: Client) -> None:
        self._adapter = adapter
        self._client = client
        self._polled: list[tuple[Node, NodeSpec]] = []

    async def subscribe(self) -> None:
        """Resolve the node ids on this server and create the session's one subscription."""
        cfg = self._adapter.config
        client = self._client
        specs = await self._resolve()
        subscribed = [n for n, s in specs.items() if s.mode == "subscribe"]
        if subscribed:
            handler = _Handler(self._adapter, specs)
            sub = await client.create_subscription(cfg.publishing_interval_ms, handler)
            by_interval: dict[float, list[Node]] = {}
            for node_id in subscribed:
                by_interval.setdefault(specs[node_id].sampling_interval_ms, []).append(
                    client.get_node(node_id)
                )
            for interval, nodes in by_interval.items():
                results = await sub.subscribe_data_change(
                    nodes, queuesize=cfg.queue_size, sampling_interval=ua.Double(interval)
                )
                for node, result in zip(
                    nodes, results if isinstance(results, list) else [results], strict=True
                ):
                    if isinstance(result, ua.StatusCode):
                        raise UaError(f"cannot monitor {node.nodeid}: {result}")
        self._polled = [(client.get_node(n), s) for n, s in specs.items() if s.mode == "poll"]

    async def _resolve(self) -> dict[ua.NodeId, NodeSpec]:
        """Node ids with namespace indexes as this server numbers them today."""
        namespaces: dict[str, int] = {}
        out: dict[ua.NodeId, NodeSpec] = {}
        for spec in self._adapter.config.nodes:
            uri, kind, ident = spec.parts()
            uri = uri or self._adapter.config.namespace_uri
            index = 0
            if uri is not None:
                if uri not in namespaces:
                    try:
                        namespaces[uri] = await self._client.get_namespace_index(uri)
                    except ValueError as err:
                        raise UaError(f"server has no namespace {uri!r}") from err
                index = namespaces[uri]
            identifier: Any = int(ident) if kind == "i" else ident
            out[ua.NodeId(identifier, ua.Int16(index))] = spec
        return out

    async def run(self) -> str:
        """Poll what must be polled and probe the session until a read fails."""
        adapter = self._adapter
        cfg = adapter.config
        next_poll = {id(spec): 0.0 for _, spec in self._polled}
        while True:
            now = time.monotonic()
            for node, spec in self._polled:
                if now >= next_poll[id(spec)]:
                    next_poll[id(spec)] = now + spec.poll_interval_ms / 1000
                    dv = await asyncio.wait_for(node.read_data_value(), cfg.timeout_s)
                    value = dv.Value.Value if dv.Value is not None else None
                    adapter.supervisor.data_seen()
                    adapter.emitter.submit([_sample(cfg, spec, value, dv)])
            # Watchdog: a blackholed network never closes the socket, a read timing out does.
            await asyncio.wait_for(self._client.nodes.server_state.read_value(), cfg.timeout_s)
            wait = cfg.watchdog_s
            if self._polled:
                wait = min(wait, max(0.01, min(next_poll.values()) - time.monotonic()))
            await asyncio.sleep(wait)

    async def close(self) -> None:
        """Close the session politely if the server still answers, then the socket anyway."""
        await _disconnect(self._client)


async def _disconnect(client: Client) -> None:
    # A broken client can fail to close in any way asyncua likes; the socket goes regardless.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), 2.0)
    with contextlib.suppress(Exception):
        client.disconnect_socket()


class OpcUaAdapter:
    """One OPC UA server, one machine; many instances may run at once."""

    def __init__(self, config: OpcUaAdapterConfig, context: AdapterContext) -> None:
        self.config = config
        self.emitter = context.emitter
        self.notifications = 0
        self.supervisor = ConnectionSupervisor(
            context,
            name=config.name,
            machines=[config.machine],
            connect=self._connect,
            errors=ERRORS,
            connect_timeout_s=config.timeout_s * 4,  # connect, namespaces, subscription
            backoff=Backoff(max_s=config.reconnect_max_s),
        )

    @property
    def sessions(self) -> int:
        """Sessions opened so far; each holds exactly one subscription."""
        return self.supervisor.sessions

    async def start(self) -> None:
        """Connect in the background; returns at once."""
        await self.supervisor.start()

    async def stop(self, timeout_s: float) -> None:
        """Close the session and stop, within ``timeout_s``."""
        await self.supervisor.stop(timeout_s)

    def request_reconnect(self, reason: str) -> None:
        """Drop the session and open a new one; ``reason`` becomes the gap's."""
        self.supervisor.request_reconnect(reason)

    async def _connect(self) -> _Session:
        cfg = self.config
        client = Client(cfg.endpoint, timeout=cfg.timeout_s)
        client.session_timeout = 60_000  # ms; a dead session is freed by the server soon
        try:
            await asyncio.wait_for(client.connect(), cfg.timeout_s * 2)
            session = _Session(self, client)
            await session.subscribe()
        except BaseException:
            await asyncio.shield(_disconnect(client))
            raise
        return session
