"""The Sparkplug B host's view of its edge nodes: births, aliases, ``seq`` and ``bdSeq``.

Pure state, no I/O, no clock but the one passed in: :meth:`EdgeNodes.handle` takes one decoded
message and says what it means (values by metric name, who was born or died, whether the
node's births are now out of date and why). The adapter turns that into samples, device
states and rebirth requests. The rules are those of the Sparkplug 3.0 specification (host
application behaviour, sections 5.x and 6.4):

- NBIRTH starts an edge node session: its metrics (names, aliases, datatypes, current values)
  and ``bdSeq``; every device's births are dropped until its DBIRTH;
- every message after the NBIRTH but NDEATH carries ``seq`` = previous + 1 modulo 256; a
  different one means a message was lost: the births may be out of date;
- DATA may name metrics by alias only; an alias not in the birth, or DATA before any birth,
  also means the births are out of date;
- NDEATH ends the session if its ``bdSeq`` is the one of the NBIRTH (a late death of an older
  session does not kill the current one); DDEATH ends one device's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .payload import BDSEQ_METRIC, Metric, Payload, Topic

SEQ_MODULO = 256


@dataclass(slots=True)
class _Births:
    """The metrics announced by one BIRTH (the edge node's own, or one device's)."""

    names: dict[int, str] = field(default_factory=dict)  # alias -> metric name
    units: dict[str, str] = field(default_factory=dict)  # metric name -> engUnit

    @classmethod
    def of(cls, metrics: tuple[Metric, ...]) -> _Births:
        births = cls()
        for m in metrics:
            if m.name is None:
                continue
            if m.alias is not None:
                births.names[m.alias] = m.name
            if m.unit is not None:
                births.units[m.name] = m.unit
        return births


@dataclass(slots=True)
class _Node:
    alive: bool = False  # an NBIRTH is held and no NDEATH came since
    bd_seq: int | None = None
    next_seq: int | None = None
    births: dict[str | None, _Births] = field(default_factory=dict)  # None: the node's own
    outdated: str | None = None  # why a rebirth is wanted, until the next NBIRTH
    last_request: float | None = None  # caller's clock (monotonic s) of the last request


@dataclass(frozen=True, slots=True)
class Value:
    """A metric value by name, with the unit its birth gave (engUnit), if any."""

    device: str | None
    name: str
    value: object
    timestamp_ms: int | None
    unit: str | None


@dataclass(slots=True)
class Outcome:
    """What one message means for its edge node."""

    values: list[Value] = field(default_factory=list)
    born: str | None = None  # "node" or "device" when this was a birth
    died: str | None = None  # "node" or "device" when this was a death that counts
    stale_death: bool = False  # an NDEATH of an older session: ignored
    seq_gap: tuple[int, int] | None = None  # (expected, received)
    outdated: str | None = None  # the births became out of date by this message, and why
    dropped: bool = False  # data that could not be read for want of a birth
    unknown_aliases: int = 0
    unsupported: list[str] = field(default_factory=list)  # metrics of a type we do not read


class EdgeNodes:
    """The sessions of the edge nodes one adapter listens to (all state on the instance)."""

    def __init__(self) -> None:
        self._nodes: dict[str, _Node] = {}

    def alive(self, edge_node: str) -> bool:
        node = self._nodes.get(edge_node)
        return node is not None and node.alive

    def outdated(self, edge_node: str) -> str | None:
        """Why ``edge_node``'s births are out of date (a rebirth is wanted), or None."""
        node = self._nodes.get(edge_node)
        return node.outdated if node is not None else None

    def want_rebirth(self, edge_node: str, reason: str) -> None:
        """Mark ``edge_node``'s births as out of date, e.g. after our own reconnect."""
        node = self._nodes.setdefault(edge_node, _Node())
        node.outdated = reason

    def rebirth_due(self, edge_node: str, now_s: float, interval_s: float) -> str | None:
        """The reason to request a rebirth now, or None (none wanted, or one sent too recently).

        Returning a reason records the request: the next one is due ``interval_s`` later at
        the earliest, and only if the births are still out of date by then.
        """
        node = self._nodes.get(edge_node)
        if node is None or node.outdated is None:
            return None
        if node.last_request is not None and now_s - node.last_request < interval_s:
            return None
        node.last_request = now_s
        return node.outdated

    def handle(self, topic: Topic, payload: Payload) -> Outcome:
        """Apply one message of ``topic``'s edge node; say what it carried and meant."""
        node = self._nodes.setdefault(topic.edge_node, _Node())
        out = Outcome()
        kind = topic.message_type
        if kind == "NBIRTH":
            self._nbirth(node, payload, out)
            return out
        if kind == "NDEATH":
            self._ndeath(node, payload, out)
            return out
        if not node.alive:
            out.dropped = True
            self._outdated(node, out, f"data before birth: {kind} before any NBIRTH")
            return out
        self._check_seq(node, payload, out)
        scope = topic.device if kind.startswith("D") else None
        if kind == "DBIRTH":
            node.births[scope] = _Births.of(payload.metrics)
            out.born = "device"
            self._values(node, scope, payload, out)
        elif kind == "DDEATH":
            node.births.pop(scope, None)
            out.died = "device"
        elif scope not in node.births:
            out.dropped = True
            self._outdated(
                node, out, f"data before birth: DDATA of device {scope} before its DBIRTH"
            )
        else:
            self._values(node, scope, payload, out)
        return out

    # ------------------------------------------------------------------ message kinds
    def _nbirth(self, node: _Node, payload: Payload, out: Outcome) -> None:
        node.alive = True
        node.bd_seq = _bd_seq(payload)
        node.next_seq = None if payload.seq is None else (payload.seq + 1) % SEQ_MODULO
        node.births = {None: _Births.of(payload.metrics)}
        node.outdated = None
        out.born = "node"
        self._values(node, None, payload, out)

    def _ndeath(self, node: _Node, payload: Payload, out: Outcome) -> None:
        bd_seq = _bd_seq(payload)
        if node.alive and bd_seq is not None and node.bd_seq is not None and bd_seq != node.bd_seq:
            out.stale_death = True
            return
        node.alive = False
        node.next_seq = None
        node.births = {}
        node.outdated = None  # it will be born again when it comes back, asked or not
        out.died = "node"

    def _check_seq(self, node: _Node, payload: Payload, out: Outcome) -> None:
        if payload.seq is None:
            return
        expected = node.next_seq
        node.next_seq = (payload.seq + 1) % SEQ_MODULO
        if expected is not None and payload.seq != expected:
            out.seq_gap = (expected, payload.seq)
            self._outdated(node, out, f"seq gap: expected {expected}, got {payload.seq}")

    def _values(self, node: _Node, scope: str | None, payload: Payload, out: Outcome) -> None:
        births = node.births.get(scope, _Births())
        for m in payload.metrics:
            name = m.name
            if name is None and m.alias is not None:
                name = births.names.get(m.alias)
                if name is None:
                    out.unknown_aliases += 1
                    self._outdated(node, out, f"unknown alias: {m.alias}")
                    continue
            if name is None:
                continue  # neither name nor alias: nothing to map it by
            if m.unsupported is not None:
                out.unsupported.append(m.unsupported)
                continue
            if m.value is None:
                continue  # null (is_null), or announced without a value
            ts = m.timestamp_ms if m.timestamp_ms is not None else payload.timestamp_ms
            unit = m.unit if m.unit is not None else births.units.get(name)
            out.values.append(Value(scope, name, m.value, ts, unit))

    @staticmethod
    def _outdated(node: _Node, out: Outcome, reason: str) -> None:
        out.outdated = out.outdated or reason
        node.outdated = reason


def _bd_seq(payload: Payload) -> int | None:
    metric = payload.metric(BDSEQ_METRIC)
    if metric is None or isinstance(metric.value, bool) or not isinstance(metric.value, int):
        return None
    return metric.value
