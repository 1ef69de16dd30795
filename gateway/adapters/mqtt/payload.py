"""Turning one MQTT message into raw samples, as configured; pure and fuzzed in the tests."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Any

import orjson

from ...sdk import MISSING, PayloadError, RawSample, datetime_to_ns, json_path, scaled
from .config import FieldSpec, Subscription, TimestampSpec, ValueSpec


class CompiledSubscription:
    """A subscription with its topic turned into a matcher that captures placeholders."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        parts = []
        for level in sub.topic.split("/"):
            if level in ("{machine}", "{signal}"):
                parts.append(f"(?P<{level[1:-1]}>[^/]+)")
            elif level == "+":
                parts.append("[^/]+")
            elif level == "#":
                parts.append(".*")
            else:
                parts.append(re.escape(level))
        pattern = "/".join(parts)
        if pattern.endswith("/.*"):  # 'a/#' also matches 'a'
            pattern = pattern[:-3] + "(?:/.*)?"
        self._regex = re.compile(pattern + r"\Z")

    def match(self, topic: str) -> dict[str, str] | None:
        m = self._regex.match(topic)
        return None if m is None else m.groupdict()


def _epoch(value: float, fmt: str) -> int:
    if fmt == "auto":
        magnitude = abs(value)
        fmt = (
            "epoch_s"
            if magnitude < 1e11
            else "epoch_ms"
            if magnitude < 1e14
            else "epoch_us"
            if magnitude < 1e17
            else "epoch_ns"
        )
    factor = {"epoch_s": 1e9, "epoch_ms": 1e6, "epoch_us": 1e3, "epoch_ns": 1}[fmt]
    if isinstance(value, int):
        return value * int(factor)
    return round(value * factor)


def parse_timestamp(doc: Any, spec: TimestampSpec, receive_ns: int) -> int:
    if spec.path is None:
        return receive_ns
    raw = json_path(doc, spec.path)
    if raw is MISSING:
        raise PayloadError(f"timestamp field {spec.path!r} is missing")
    if isinstance(raw, bool):
        raise PayloadError(f"timestamp field {spec.path!r} is a boolean")
    if isinstance(raw, int | float):
        if spec.format == "iso8601":
            raise PayloadError(
                f"timestamp field {spec.path!r}: expected ISO 8601 text, got {raw!r}"
            )
        if not math.isfinite(raw):
            raise PayloadError(f"timestamp field {spec.path!r} is not finite: {raw!r}")
        if abs(raw) > 1e19:
            raise PayloadError(f"timestamp field {spec.path!r} is out of range: {raw!r}")
        return _epoch(raw, spec.format)
    if isinstance(raw, str):
        if spec.format not in ("auto", "iso8601"):
            raise PayloadError(f"timestamp field {spec.path!r}: expected a number ({spec.format})")
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError as err:
            raise PayloadError(
                f"timestamp field {spec.path!r}: not ISO 8601: {raw[:64]!r}"
            ) from err
        if dt.tzinfo is None:
            raise PayloadError(f"timestamp field {spec.path!r}: no time zone in {raw[:64]!r}")
        return datetime_to_ns(dt)
    raise PayloadError(f"timestamp field {spec.path!r} has type {type(raw).__name__}")


def _scaled(value: Any, spec: FieldSpec | ValueSpec) -> Any:
    return scaled(value, spec.scale, spec.offset)


def _unit(doc: Any, spec: FieldSpec | ValueSpec) -> str | None:
    if spec.unit_path:
        unit = json_path(doc, spec.unit_path)
        if isinstance(unit, str):
            return unit
    return spec.unit


def decode(
    compiled: CompiledSubscription,
    captured: dict[str, str],
    topic: str,
    payload: bytes,
    receive_ns: int,
) -> list[RawSample]:
    """Raise PayloadError (with the reason in words) when nothing usable can be taken."""
    sub = compiled.sub
    machine = captured.get("machine") or sub.machine or ""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise PayloadError(f"payload is not valid JSON: {err}") from err
    if sub.value is not None:
        spec = sub.value
        signal = sub.signal or captured.get("signal", "")
        signal = sub.signals.get(signal, signal)
        if spec.path is None:
            value, unit, ts_ns = doc, spec.unit, receive_ns
        else:
            if not isinstance(doc, dict):
                raise PayloadError(f"expected a JSON object, got {type(doc).__name__}")
            value = json_path(doc, spec.path)
            if value is MISSING:
                raise PayloadError(f"value field {spec.path!r} is missing")
            unit = _unit(doc, spec)
            ts_ns = parse_timestamp(doc, sub.timestamp, receive_ns)
        return [RawSample(machine, signal, _scaled(value, spec), unit, ts_ns, "good", topic)]
    if not isinstance(doc, dict):
        raise PayloadError(f"expected a JSON object, got {type(doc).__name__}")
    ts_ns = parse_timestamp(doc, sub.timestamp, receive_ns)
    out = []
    for f in sub.fields:
        value = json_path(doc, f.path)
        if value is MISSING:
            continue  # a machine may leave out fields it has nothing to say about
        out.append(
            RawSample(machine, f.signal, _scaled(value, f), _unit(doc, f), ts_ns, "good", topic)
        )
    if not out:
        wanted = ", ".join(f.path for f in sub.fields)
        raise PayloadError(f"none of the mapped fields ({wanted}) is in the payload")
    return out
