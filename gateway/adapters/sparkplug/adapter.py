"""The Sparkplug B adapter: a host application reading edge nodes' metrics from a broker.

The connection is :class:`microfactory.mqtt.client.MqttClient` in single-session mode, owned
by :class:`~microfactory.gateway.supervisor.ConnectionSupervisor` (reconnect with backoff,
connection states, one gap per machine after a broker outage), exactly as in the MQTT
adapter; connected means subscribed (the SUBACK is in). Each mapped edge node or device is a
device of a :class:`~microfactory.gateway.sdk.DeviceWatch`: a death makes it offline at once
(and ``online`` = 0 for its machine), and its next birth reports the gap.

The Sparkplug session logic (births, aliases, ``seq``, ``bdSeq``) is :mod:`.nodes`, pure; the
payload decoding is :mod:`.payload`. This module maps metric names onto signals, requests
rebirths (NCMD ``Node Control/Rebirth``, at most one per edge node per
``rebirth_interval_s``), and keeps the counters. Messages are handled on the client's network
thread, in order; the state they touch is guarded by one lock, since rebirth requests at
connect come from the event loop.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from microfactory.mqtt.client import Message, MqttClient, MqttError, Reconnect

from ...sdk import (
    AdapterContext,
    ConnectionSupervisor,
    DeviceWatch,
    PayloadError,
    RawSample,
    scaled,
    signal_kind,
)
from ..mqtt.session import BrokerSession
from .config import NAMESPACE, MetricMapping, SparkplugAdapterConfig
from .nodes import EdgeNodes, Outcome, Value
from .payload import Topic, decode, encode_rebirth, parse_topic

CONNECT_TIMEOUT_S = 10.0
MAX_LOGGED_NAMES = 1000  # unmapped metric names remembered for "log once"


@dataclass(frozen=True, slots=True)
class _Mapping:
    """One configured edge node or device: its machine and metrics by name."""

    device_key: str  # the DeviceWatch name: group/edge_node[/device]
    machine: str
    metrics: dict[str, MetricMapping]


class SparkplugAdapter:
    def __init__(self, config: SparkplugAdapterConfig, context: AdapterContext) -> None:
        self.config = config
        self._emitter = context.emitter
        self._log = context.logger
        self._clock = context.clock
        self._group = config.group_id
        self._mappings: dict[tuple[str, str | None], _Mapping] = {}
        for m in config.mappings():
            key = f"{config.group_id}/{m.edge_node}" + (f"/{m.device}" if m.device else "")
            self._mappings[(m.edge_node, m.device)] = _Mapping(
                key, m.machine, {metric.name: metric for metric in m.metrics}
            )
        self._nodes = EdgeNodes()
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self._last: dict[str, dict[str, RawSample]] = {}  # device -> signal -> last sample
        self.counters: Counter[str] = Counter()
        """messages, samples, seq_gaps, unknown_aliases, dropped, stale_deaths, unmapped,
        rebirth_requests, rebirth_requests_failed, births, deaths, dead_letters"""
        self.rebirth_reasons: Counter[str] = Counter()
        self._client = MqttClient(
            config.connection(),
            name=f"sparkplug adapter {config.name}",
            persistent=config.persistent_session,
            manual_ack=True,
            max_inflight=1000,
            reconnect=Reconnect.SINGLE_SESSION,
            on_message=self._on_message,
            logger=self._log,
        )
        self.devices = DeviceWatch(context, config.name, stale_after_s=config.stale_after_s)
        self.supervisor = ConnectionSupervisor(
            context,
            name=config.name,
            machines=config.machines_referenced(),
            connect=self._connect,
            connect_timeout_s=CONNECT_TIMEOUT_S + 1,
            devices=self.devices,
        )

    def filters(self) -> list[tuple[str, int]]:
        """The topic filters: every message of each mapped edge node and its devices."""
        out: list[tuple[str, int]] = []
        for node in self.config.edge_nodes():
            base = f"{NAMESPACE}/{self._group}/+/{node}"
            out += [(base, 1), (f"{base}/+", 1)]
        return out

    async def start(self) -> None:
        await self.supervisor.start()

    async def stop(self, timeout_s: float) -> None:
        await self.supervisor.stop(timeout_s)

    async def _connect(self) -> BrokerSession:
        await self._client.connect(CONNECT_TIMEOUT_S)
        await self._client.subscribed(self.filters(), CONNECT_TIMEOUT_S)
        # What happened while we were away is unknown (deaths and data at QoS 0 are not
        # queued for us): ask every node for its births, which also gives current values.
        with self._lock:
            for node in self.config.edge_nodes():
                self._nodes.want_rebirth(node, "gateway connected")
                self._maybe_rebirth(node)
        return BrokerSession(self._client)

    # ------------------------------------------------------------ client callback (its thread)
    def _on_message(self, msg: Message) -> None:
        self.supervisor.data_seen()
        try:
            with self._lock:
                self._handle(msg.topic, msg.payload, msg.ack)
        except Exception as err:  # top-level guard: a bad message must never kill the thread
            self._log.exception("%s: unexpected error on %s", self.config.name, msg.topic)
            self._dead_letter(msg.topic, f"internal error: {err!r}", msg.payload, msg.ack)

    def _handle(self, topic_name: str, data: bytes, ack: Callable[[], None] | None) -> None:
        self.counters["messages"] += 1
        topic = parse_topic(topic_name)
        if topic is None or topic.group != self._group:
            self._dead_letter(topic_name, "not a Sparkplug B topic of this adapter", data, ack)
            return
        if topic.message_type in ("NCMD", "DCMD", "STATE"):
            if ack is not None:
                ack()  # commands (our own rebirth requests among them) are not data
            return
        if len(data) > self.config.max_payload_bytes:
            reason = f"payload of {len(data)} bytes exceeds max_payload_bytes={self.config.max_payload_bytes}"
            self._dead_letter(topic_name, reason, data, ack)
            return
        try:
            payload = decode(topic_name, data)
        except PayloadError as err:
            self._dead_letter(topic_name, str(err), data, ack)
            return
        outcome = self._nodes.handle(topic, payload)
        samples, problems = self._apply(topic, outcome)
        self._maybe_rebirth(topic.edge_node)
        if problems:
            self._dead_letter(topic_name, "; ".join(problems), data, None if samples else ack)
        if samples:
            self.counters["samples"] += len(samples)
            self._emitter.submit(samples, ack)
        elif not problems and ack is not None:
            ack()

    def _apply(self, topic: Topic, out: Outcome) -> tuple[list[RawSample], list[str]]:
        """Counters, device states and samples of one handled message."""
        now_ns = self._clock()
        name = self.config.name
        node = topic.edge_node
        where = f"edge node {node}" + (f" device {topic.device}" if topic.device else "")
        if out.seq_gap is not None:
            self.counters["seq_gaps"] += 1
            self._log.warning(
                "%s: %s: seq gap (expected %d, got %d): a message was lost",
                name,
                node,
                *out.seq_gap,
            )
        if out.unknown_aliases:
            self.counters["unknown_aliases"] += out.unknown_aliases
        if out.dropped:
            self.counters["dropped"] += 1
            self._log.debug(
                "%s: %s: %s dropped (%s)", name, where, topic.message_type, out.outdated
            )
        if out.stale_death:
            self.counters["stale_deaths"] += 1
            self._log.info("%s: %s: NDEATH of an older session ignored (bdSeq)", name, node)
        samples: list[RawSample] = []
        affected = self._affected(topic, out)
        if out.died is not None:
            self.counters["deaths"] += 1
            reason = f"Sparkplug {topic.message_type} of {where}"
            for mapping in affected:
                self.devices.offline(mapping.device_key, reason, (mapping.machine,))
                samples.append(self._online(mapping, False, now_ns, topic))
                samples += self._stale(mapping, now_ns, topic)
        if out.born is not None:
            self.counters["births"] += 1
            self._log.debug("%s: %s: %s", name, where, topic.message_type)
            for mapping in affected:
                self.devices.seen(mapping.device_key, (mapping.machine,))
                samples.append(self._online(mapping, True, now_ns, topic))
        own = self._mappings.get((node, topic.device))
        problems: list[str] = []
        if own is not None and (out.values or out.unsupported):
            if out.born is None:
                self.devices.seen(own.device_key, (own.machine,))
            last = self._last.setdefault(own.device_key, {})
            for value in out.values:
                sample, problem = self._sample(own, value, topic)
                if sample is not None:
                    samples.append(sample)
                    last[sample.signal] = sample
                if problem is not None:
                    problems.append(problem)
            for label in out.unsupported:
                metric = label.split(":", 1)[0]
                if metric in own.metrics:
                    problems.append(f"metric {label} is not a value type the adapter reads")
        return samples, problems

    def _affected(self, topic: Topic, out: Outcome) -> list[_Mapping]:
        """The mappings a birth or death concerns: a node's death ends its devices too."""
        if out.died == "node":
            return [m for (node, _), m in self._mappings.items() if node == topic.edge_node]
        if out.born == "node":
            mapping = self._mappings.get((topic.edge_node, None))
            return [mapping] if mapping is not None else []
        if out.born == "device" or out.died == "device":
            mapping = self._mappings.get((topic.edge_node, topic.device))
            return [mapping] if mapping is not None else []
        return []

    def _stale(self, mapping: _Mapping, now_ns: int, topic: Topic) -> list[RawSample]:
        """The device's last values again at its death, quality ``uncertain``: Sparkplug's
        STALE. A chart shows from when they stopped being true; counters do not move."""
        last = self._last.pop(mapping.device_key, {})
        return [
            RawSample(s.machine, s.signal, s.value, s.unit, now_ns, "uncertain", f"{topic}: stale")
            for s in last.values()
        ]

    def _online(self, mapping: _Mapping, online: bool, now_ns: int, topic: Topic) -> RawSample:
        return RawSample(mapping.machine, "online", online, None, now_ns, origin=str(topic))

    def _sample(
        self, mapping: _Mapping, value: Value, topic: Topic
    ) -> tuple[RawSample | None, str | None]:
        spec = mapping.metrics.get(value.name)
        if spec is None:
            self.counters["unmapped"] += 1
            label = f"{mapping.device_key}:{value.name}"
            if label not in self._logged and len(self._logged) < MAX_LOGGED_NAMES:
                self._logged.add(label)
                self._log.debug(
                    "%s: metric %r of %s is not mapped; ignored",
                    self.config.name,
                    value.name,
                    mapping.device_key,
                )
            return None, None
        kind = signal_kind(spec.signal)
        v = value.value
        wrong = (
            (
                kind in ("gauge", "counter")
                and (isinstance(v, bool) or not isinstance(v, int | float))
            )
            or (kind == "boolean" and not isinstance(v, bool | int))
            or (kind == "text" and not isinstance(v, str))
        )
        if wrong:
            return None, (
                f"metric {value.name!r} of {mapping.device_key}: a {type(v).__name__} value "
                f"cannot go onto the {kind} signal {spec.signal!r}"
            )
        ts_ns = value.timestamp_ms * 1_000_000 if value.timestamp_ms is not None else None
        unit = spec.unit if spec.unit is not None else value.unit
        sample = RawSample(
            mapping.machine,
            spec.signal,
            scaled(v, spec.scale, spec.offset),
            unit,
            ts_ns,
            origin=f"{topic}:{value.name}",
        )
        return sample, None

    def _maybe_rebirth(self, node: str) -> None:
        """Send NCMD ``Node Control/Rebirth`` to ``node`` if its births are out of date."""
        if not self.config.rebirth:
            return
        reason = self._nodes.rebirth_due(node, time.monotonic(), self.config.rebirth_interval_s)
        if reason is None:
            return
        topic = f"{NAMESPACE}/{self._group}/NCMD/{node}"
        payload = encode_rebirth(self._clock() // 1_000_000)
        try:
            self._client.publish(topic, payload, qos=0)
        except MqttError as err:
            self.counters["rebirth_requests_failed"] += 1
            self._log.debug("%s: rebirth request to %s not sent: %s", self.config.name, node, err)
            return
        self.counters["rebirth_requests"] += 1
        key = reason.split(":", 1)[0]
        self.rebirth_reasons[key] += 1
        level = self._log.debug if key == "gateway connected" else self._log.info
        level("%s: asked edge node %s for a rebirth (%s)", self.config.name, node, reason)

    def _dead_letter(
        self, topic: str, reason: str, data: bytes, ack: Callable[[], None] | None
    ) -> None:
        self.counters["dead_letters"] += 1
        self._emitter.dead_letter(self.config.name, topic, reason, data, ack)
