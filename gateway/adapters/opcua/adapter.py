"""The OPC UA adapter: one secured session per server, data-change subscriptions and polling.

The SDK's :class:`ConnectionSupervisor` owns the session's life (connect with capped,
jittered backoff, gaps, stop within a timeout) instead of asyncua's ``auto_reconnect``:
after a lost connection (server restart, network loss, a watchdog read timing out) the
session is thrown away, and the next one resolves namespace URIs again (indexes may change
on restart) and creates exactly one new subscription.

Only a lost connection ends a session. A node that is unknown, unreadable or refuses its
monitored item is a problem of that node: reported once by name (``BadNodeIdUnknown``),
left out of the session, and the others carry on. A Bad or Uncertain value is data, stored
with its quality. Polled nodes are read in one Read per interval (200 nodes a request),
each DataValue with its own status, so one bad node cannot starve the ones listed after it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from ...sdk import AdapterContext, Backoff, ConnectionSupervisor, RawSample
from .batched import node_key, read_attributes, value_of
from .config import NodeSpec, OpcUaAdapterConfig
from .connect import disconnect, open_client
from .datatypes import is_builtin
from .status import status_name
from .values import NodeReader, ValueProblem, enum_map_from

# What a session may fail with when the server or the network goes away.
ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    ConnectionError,
    UaError,
    asyncio.IncompleteReadError,
)

# Statuses that say the configuration is wrong for a node, not that its value is bad.
CONFIG_STATUSES = frozenset(
    {
        "BadNodeIdUnknown",
        "BadNodeIdInvalid",
        "BadAttributeIdInvalid",
        "BadNotReadable",
        "BadUserAccessDenied",
        "BadIndexRangeInvalid",
        "BadNotSupported",
        "BadFilterNotAllowed",
        "BadMonitoredItemFilterUnsupported",
        "BadDeadbandFilterInvalid",
        "BadSecurityModeInsufficient",
    }
)


@dataclass(slots=True)
class _Item:
    node_id: ua.NodeId
    reader: NodeReader


class NodeProblems:
    """Per-node problems, logged once when they appear and once when they are gone."""

    def __init__(self, adapter: OpcUaAdapter) -> None:
        self._adapter = adapter
        self.current: dict[str, str] = {}  # node -> message
        self.counts: dict[str, int] = {}

    def report(self, node: str, message: str, payload: bytes = b"") -> None:
        self.counts[node] = self.counts.get(node, 0) + 1
        if self.current.get(node) == message:
            return
        self.current[node] = message
        a = self._adapter
        a.log.warning("%s: %s", a.config.name, message)
        if payload:
            a.emitter.dead_letter(a.config.name, node, message, payload)

    def clear(self, node: str) -> None:
        if self.current.pop(node, None) is not None:
            self._adapter.log.info("%s: node %r is readable again", self._adapter.config.name, node)


class _Handler:
    """Receives data changes from asyncua and hands them on once per publish response."""

    def __init__(self, session: _Session, items: dict[int, _Item]) -> None:
        self._session = session
        self._items = items
        self._pending: list[RawSample] = []
        self._loop = asyncio.get_running_loop()

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        notification = data.monitored_item
        item = self._items.get(notification.ClientHandle)
        if item is None:
            return
        samples = self._session.decode(item, notification.Value)
        if samples:
            if not self._pending:
                self._loop.call_soon(self._flush)
            self._pending.extend(samples)
        self._session.adapter.notifications += 1

    def status_change_notification(self, status: Any) -> None:
        code = getattr(status, "Status", None)
        self._session.adapter.request_reconnect(f"subscription status changed: {status_name(code)}")

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        if batch:
            adapter = self._session.adapter
            adapter.supervisor.data_seen()
            adapter.emitter.submit(batch)


class _Session:
    """One connected client holding one subscription; ``run`` polls and probes it."""

    def __init__(self, adapter: OpcUaAdapter, client: Client) -> None:
        self.adapter = adapter
        self._client = client
        self._polled: dict[float, list[_Item]] = {}  # poll interval (ms) -> items

    # --------------------------------------------------------------- set-up
    async def subscribe(self) -> None:
        """Resolve the nodes on this server and create the session's one subscription."""
        cfg = self.adapter.config
        specs = list(cfg.nodes)
        if cfg.companion == "auto":
            specs += await self._companion_specs({s for spec in specs for s in spec.signals})
        resolved = await self._resolve(specs)
        readable = await self._check_nodes(resolved)
        subscribed = [item for item in readable if item.reader.spec.mode == "subscribe"]
        if subscribed:
            await self._monitor(subscribed)
        for item in readable:
            if item.reader.spec.mode == "poll":
                self._polled.setdefault(item.reader.spec.poll_interval_ms, []).append(item)

    async def _companion_specs(self, taken: set[str]) -> list[NodeSpec]:
        from .companion import discover

        found = await discover(self._client)
        out: list[NodeSpec] = []
        for proposal in found:
            if proposal.signal in taken:
                continue
            taken.add(proposal.signal)
            out.append(
                NodeSpec(node=proposal.node, signal=proposal.signal, value_map=proposal.value_map)
            )
            self.adapter.log.debug(
                "%s: %s maps %s to %s",
                self.adapter.config.name,
                proposal.spec,
                proposal.browse_path,
                proposal.signal,
            )
        if not found:
            self.adapter.problems.report(
                "companion", "companion: auto found no Machinery or Machine Tools objects"
            )
        return out

    async def _resolve(self, specs: list[NodeSpec]) -> list[tuple[NodeSpec, ua.NodeId]]:
        """Node ids with namespace indexes as this server numbers them today."""
        cfg = self.adapter.config
        namespaces: dict[str, int | None] = {}
        out: list[tuple[NodeSpec, ua.NodeId]] = []
        for spec in specs:
            uri, kind, ident = spec.parts()
            uri = uri or cfg.namespace_uri
            index: int | None = 0
            if uri is not None:
                if uri not in namespaces:
                    try:
                        namespaces[uri] = await self._client.get_namespace_index(uri)
                    except ValueError:
                        namespaces[uri] = None
                index = namespaces[uri]
            if index is None:
                self.adapter.problems.report(
                    spec.node, f"node {spec.node!r}: the server has no namespace {uri!r}"
                )
                continue
            identifier: Any = int(ident) if kind == "i" else ident
            out.append((spec, ua.NodeId(identifier, ua.Int16(index))))
        return out

    def _reader(self, spec: NodeSpec) -> NodeReader:
        cfg = self.adapter.config
        return NodeReader(spec, cfg.machine, spec.timestamp or cfg.timestamp)

    async def _check_nodes(self, resolved: list[tuple[NodeSpec, ua.NodeId]]) -> list[_Item]:
        """Read every node's DataType (batched): unknown nodes are reported, not fatal."""
        results = await asyncio.wait_for(
            read_attributes(self._client, [(n, AttributeIds.DataType) for _, n in resolved]),
            self.adapter.config.timeout_s,
        )
        items: list[_Item] = []
        enum_maps: dict[tuple[int, str], dict[int | str, str] | None] = {}
        for (spec, node_id), dv in zip(resolved, results, strict=True):
            if dv.StatusCode is not None and not dv.StatusCode.is_good():
                self.adapter.problems.report(
                    spec.node, f"node {spec.node!r} left out: {status_name(dv.StatusCode)}"
                )
                continue
            reader = self._reader(spec)
            data_type = value_of(dv)
            if spec.value_map is None and isinstance(data_type, ua.NodeId):
                key = node_key(data_type)
                if key not in enum_maps:  # nodes of one enumeration type ask once
                    enum_maps[key] = await self._enum_map(data_type)
                reader.enum_map = enum_maps[key]
            items.append(_Item(node_id, reader))
        return items

    async def _enum_map(self, data_type: ua.NodeId) -> dict[int | str, str] | None:
        """EnumStrings / EnumValues of an enumeration data type, if it is one."""
        if is_builtin(data_type):
            return None
        node = self._client.get_node(data_type)
        strings: list[Any] | None = None
        values: list[Any] | None = None
        for name in ("EnumValues", "EnumStrings"):
            try:
                prop = await node.get_child(f"0:{name}")
                content = await prop.read_value()
            except (UaError, TimeoutError):
                continue
            if name == "EnumValues":
                values = list(content or [])
            else:
                strings = list(content or [])
        return enum_map_from(strings, values)

    async def _monitor(self, items: list[_Item]) -> None:
        cfg = self.adapter.config
        handles = {i + 1: item for i, item in enumerate(items)}
        handler = _Handler(self, handles)
        sub = await self._client.create_subscription(cfg.publishing_interval_ms, handler)
        requests = [self._request(handle, item, cfg.queue_size) for handle, item in handles.items()]
        results = await sub.create_monitored_items(requests)
        for (handle, item), result in zip(list(handles.items()), results, strict=True):
            if isinstance(result, ua.StatusCode):
                del handles[handle]
                node = item.reader.spec.node
                self.adapter.problems.report(
                    node, f"node {node!r} cannot be monitored: {status_name(result)}"
                )

    @staticmethod
    def _request(handle: int, item: _Item, queue_size: int) -> ua.MonitoredItemCreateRequest:
        spec = item.reader.spec
        params = ua.MonitoringParameters()
        params.ClientHandle = handle
        params.SamplingInterval = spec.sampling_interval_ms
        params.QueueSize = queue_size
        params.DiscardOldest = True
        if spec.deadband is not None:
            params.Filter = ua.DataChangeFilter(
                Trigger=ua.DataChangeTrigger.StatusValue,
                DeadbandType=1 if spec.deadband.type == "absolute" else 2,
                DeadbandValue=spec.deadband.value,
            )
        request = ua.MonitoredItemCreateRequest()
        request.ItemToMonitor = ua.ReadValueId(NodeId=item.node_id, AttributeId=AttributeIds.Value)
        request.MonitoringMode = ua.MonitoringMode.Reporting
        request.RequestedParameters = params
        return request

    # --------------------------------------------------------------- running
    def decode(self, item: _Item, dv: ua.DataValue) -> list[RawSample]:
        """Samples of one DataValue; a problem is reported once for the node, never raised."""
        node = item.reader.spec.node
        status = dv.StatusCode
        if status is not None and not status.is_good():
            name = status_name(status)
            if name in CONFIG_STATUSES:
                self.adapter.problems.report(node, f"node {node!r}: {name}")
                return []
        try:
            samples = item.reader.samples(dv)
        except ValueProblem as problem:
            value = dv.Value.Value if dv.Value is not None else None
            self.adapter.problems.report(node, str(problem), repr(value)[:256].encode())
            return []
        if node in self.adapter.problems.current:
            self.adapter.problems.clear(node)
        reader = item.reader
        if (
            reader.repeated_timestamps
            and reader.timestamp == "source"
            and not reader.frozen_reported
        ):
            reader.frozen_reported = True
            self.adapter.log.warning(
                "%s: node %r sends new values with the same source timestamp; they land on "
                "one point: set timestamp: server or receive for it",
                self.adapter.config.name,
                node,
            )
        return samples

    async def _poll(self, items: list[_Item]) -> None:
        results = await asyncio.wait_for(
            read_attributes(
                self._client,
                [(item.node_id, AttributeIds.Value) for item in items],
                timestamps=ua.TimestampsToReturn.Both,
            ),
            self.adapter.config.timeout_s,
        )
        batch: list[RawSample] = []
        for item, dv in zip(items, results, strict=True):
            batch.extend(self.decode(item, dv))
        self.adapter.supervisor.data_seen()  # the server answered: the machine is there
        if batch:
            self.adapter.emitter.submit(batch)

    async def run(self) -> str:
        """Poll what must be polled and probe the session until a read fails."""
        cfg = self.adapter.config
        next_poll = dict.fromkeys(self._polled, 0.0)
        while True:
            now = time.monotonic()
            for interval, items in self._polled.items():
                if now >= next_poll[interval]:
                    next_poll[interval] = now + interval / 1000
                    await self._poll(items)
            # Watchdog: a blackholed network never closes the socket, a read timing out does.
            await asyncio.wait_for(self._client.nodes.server_state.read_value(), cfg.timeout_s)
            wait = cfg.watchdog_s
            if next_poll:
                wait = min(wait, max(0.01, min(next_poll.values()) - time.monotonic()))
            await asyncio.sleep(wait)

    async def close(self) -> None:
        await disconnect(self._client)


class OpcUaAdapter:
    """One OPC UA server, one machine; many instances may run at once."""

    def __init__(self, config: OpcUaAdapterConfig, context: AdapterContext) -> None:
        self.config = config
        self.emitter = context.emitter
        self.log = context.logger
        self._state_dir = context.state_dir
        self.notifications = 0
        self.problems = NodeProblems(self)
        self.supervisor = ConnectionSupervisor(
            context,
            name=config.name,
            machines=[config.machine],
            connect=self._connect,
            errors=ERRORS,
            connect_timeout_s=config.timeout_s * 6,  # endpoints, connect, nodes, subscription
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
        client = await open_client(self.config, state_dir=self._state_dir, log=self.log)
        try:
            session = _Session(self, client)
            await session.subscribe()
        except UaStatusCodeError as err:
            await asyncio.shield(disconnect(client))
            raise UaError(f"{self.config.endpoint}: {status_name(err.code)}") from err
        except BaseException:
            await asyncio.shield(disconnect(client))
            raise
        return session
