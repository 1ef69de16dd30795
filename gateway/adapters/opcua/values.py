"""OPC UA values as machines send them → raw samples, decided once per node per session.

A controller's address space is not a list of doubles: counters are UInt32, states are
Int16 codes or enumerations, phases come as ``Double[3]``, timestamps as DateTime, states
as LocalizedText. A :class:`NodeReader` is built for every configured node when a session
starts (knowing the node's enumeration strings, if any) and turns each DataValue into the
samples it feeds:

- a Bad status with no value becomes a ``bad`` sample whose text is the status *name*
  (``BadSensorFailure``), so the history shows when and why a sensor was blind;
- a status that is not Good keeps the value with ``uncertain`` / ``bad`` quality;
- arrays feed one element (``index``) or one signal per element (``elements``);
- integer codes, Booleans and text go through the value map (configured, or the
  EnumStrings/EnumValues the server declares);
- the time is the source's, the server's or the receive time, as configured, and a source
  timestamp that does not advance is counted, so a frozen device clock is visible.

A value that cannot be stored as configured raises :class:`ValueProblem`; the session
reports it once per node, not once per value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asyncua import ua

from ...sdk import Quality, RawSample, datetime_to_ns, scaled, signal_kind
from .config import NodeSpec, TimestampChoice
from .status import status_name


class ValueProblem(ValueError):
    """A value the node's mapping cannot store; the text names the node and what to change."""


def quality_of(status: ua.StatusCode | None) -> Quality:
    """OPC UA status code → sample quality."""
    if status is None or status.is_good():
        return "good"
    return "uncertain" if status.is_uncertain() else "bad"


def pick_time_ns(dv: ua.DataValue, choice: TimestampChoice) -> int | None:
    """The sample's time in UTC ns; None means "when received" (the pipeline's clock)."""
    if choice == "receive":
        return None
    dt = dv.ServerTimestamp if choice == "server" else (dv.SourceTimestamp or dv.ServerTimestamp)
    return None if dt is None else datetime_to_ns(dt)


def plain(value: Any) -> Any:
    """A value with OPC UA wrappers removed: LocalizedText → its text, DateTime → ISO 8601."""
    if isinstance(value, ua.LocalizedText):
        return value.Text
    if isinstance(value, ua.QualifiedName):
        return value.Name
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, ua.Variant):
        return plain(value.Value)
    return value


@dataclass(slots=True)
class NodeReader:
    """How one configured node's DataValues become raw samples during one session."""

    spec: NodeSpec
    machine: str
    timestamp: TimestampChoice
    enum_map: dict[int | str, str] | None = None
    repeated_timestamps: int = 0
    frozen_reported: bool = False  # the session has said once that the source time stands
    problems: int = 0
    _last_source: datetime | None = field(default=None, repr=False)
    _last_value: Any = field(default=None, repr=False)

    @property
    def value_map(self) -> dict[int | str, str] | None:
        return self.spec.value_map if self.spec.value_map is not None else self.enum_map

    def samples(self, dv: ua.DataValue) -> list[RawSample]:
        spec = self.spec
        status = dv.StatusCode
        quality = quality_of(status)
        ts = pick_time_ns(dv, self.timestamp)
        raw = dv.Value.Value if dv.Value is not None else None
        self._watch_source_time(dv, raw)
        if raw is None:
            if quality == "good":
                return []  # a node without a value yet: nothing happened
            name = status_name(status)
            return [
                RawSample(self.machine, s, name, None, ts, "bad", spec.node) for s in spec.signals
            ]
        value = plain(raw)
        if isinstance(value, list):
            return self._array(value, ts, quality)
        if spec.index is not None or spec.elements is not None:
            raise ValueProblem(
                f"node {spec.node!r} holds a single {type(value).__name__}, not an array; "
                "remove index/elements"
            )
        assert spec.signal is not None  # the config requires signal without elements
        return [self._one(spec.signal, value, ts, quality)]

    def _array(self, values: list[Any], ts: int | None, quality: Quality) -> list[RawSample]:
        spec = self.spec
        if spec.elements is not None:
            return [
                self._one(name, plain(v), ts, quality)
                for name, v in zip(spec.elements, values, strict=False)
            ]
        if spec.index is None:
            raise ValueProblem(
                f"node {spec.node!r} holds an array of {len(values)} values; write "
                f"index: N for one element or elements: [signal, ...] for all"
            )
        if spec.index >= len(values):
            raise ValueProblem(
                f"node {spec.node!r}: index {spec.index} is past the array's {len(values)} values"
            )
        assert spec.signal is not None
        return [self._one(spec.signal, plain(values[spec.index]), ts, quality)]

    def _one(self, signal: str, value: Any, ts: int | None, quality: Quality) -> RawSample:
        spec = self.spec
        mapping = self.value_map
        if mapping is not None and isinstance(value, bool | int | str):
            key: int | str = int(value) if isinstance(value, bool) else value
            word = mapping.get(key)
            if word is None and isinstance(key, str) and key.lstrip("-").isdigit():
                word = mapping.get(int(key))
            if word is None:
                # a code the map does not know: kept, but not passed off as a state
                return RawSample(self.machine, signal, str(key), None, ts, "bad", spec.node)
            return RawSample(self.machine, signal, word, None, ts, quality, spec.node)
        kind = signal_kind(signal)
        if kind == "text":
            if isinstance(value, str):
                return RawSample(self.machine, signal, value, None, ts, quality, spec.node)
            raise ValueProblem(
                f"node {spec.node!r} gives {type(value).__name__} {value!r:.40} for text "
                f"signal {signal!r}; add a value_map (e.g. {{0: off, 1: idle, 2: running, 3: fault}})"
            )
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = scaled(value, spec.scale, spec.offset)
            return RawSample(self.machine, signal, number, spec.unit, ts, quality, spec.node)
        if isinstance(value, bool):
            if kind in ("gauge", "counter"):
                # a door switch stored as "1.0 W" would be a lie in every energy figure
                raise ValueProblem(
                    f"node {spec.node!r} gives a Boolean for numeric signal {signal!r}; map it "
                    "to `online` or a signal of your own, or add a value_map"
                )
            return RawSample(self.machine, signal, value, None, ts, quality, spec.node)
        if isinstance(value, str) and kind is None:
            return RawSample(self.machine, signal, value, None, ts, quality, spec.node)
        raise ValueProblem(
            f"node {spec.node!r} gives a {type(value).__name__}, which signal {signal!r} "
            "cannot store; map a numeric or text node instead"
        )

    def _watch_source_time(self, dv: ua.DataValue, raw: Any) -> None:
        source = dv.SourceTimestamp
        if source is None:
            return
        if source == self._last_source and raw != self._last_value:
            self.repeated_timestamps += 1
        self._last_source = source
        self._last_value = raw


def enum_map_from(
    strings: list[Any] | None, values: list[Any] | None
) -> dict[int | str, str] | None:
    """An enumeration's codes → names, from EnumStrings (index = code) or EnumValues."""
    if values:
        return {int(v.Value): plain(v.DisplayName) for v in values}
    if strings:
        return {i: plain(s) for i, s in enumerate(strings)}
    return None
