"""Turning one MQTT message into raw samples, as configured; pure and fuzzed in the tests.

Four payload formats: ``json`` (an object read with ``fields``, or one value), ``text`` (the
whole payload is one value: ``230.5``, ``230.5 V``, ``ON``), ``csv`` (one line of values in
``columns`` order) and ``keyvalue`` (``V1=230.5 P=1200``). A value written as text is read
the same way in the last three: a word of the ``value_map``, a number, a number followed by
its unit, or, for a text signal only, the word itself. Anything else raises
:class:`PayloadError` with the reason, and the message is dead-lettered whole.
"""

from __future__ import annotations

import csv
import math
import re
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from ...sdk import (
    MISSING,
    PayloadError,
    RawSample,
    datetime_to_ns,
    json_path,
    scaled,
    signal_kind,
)
from .config import AvailabilitySpec, CsvColumn, FieldSpec, Subscription, TimestampSpec, ValueSpec

# a decimal number written as text: "230.5", "-1.5e3", ".5"
_DECIMAL = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_NUMBER = re.compile(_DECIMAL + r"\Z")
# a number, then optionally its unit: "230.5", "-1.5e3 W", "1.2kWh"
_NUMBER_UNIT = re.compile(rf"({_DECIMAL})[ \t]*(\S.*)?\Z", re.DOTALL)
# keyvalue: pairs separated by blanks, commas or semicolons
_KV_SPLIT = re.compile(r"[\s,;]+")
_Spec = FieldSpec | ValueSpec | CsvColumn


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
        zone = sub.timestamp.timezone
        self.zone: tzinfo | None = ZoneInfo(zone) if zone else None

    def match(self, topic: str) -> dict[str, str] | None:
        m = self._regex.match(topic)
        return None if m is None else m.groupdict()


# ------------------------------------------------------------------------------ time
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


def local_to_utc(dt: datetime, zone: tzinfo) -> datetime:
    """A zone-less local time in ``zone``; a time the clocks skipped raises ValueError.

    An ambiguous time (the hour repeated when the clocks go back) is its first occurrence
    (``fold=0``): a device that writes no offset cannot say which one it meant.
    """
    aware = dt.replace(tzinfo=zone, fold=0)
    back = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if back != dt:
        raise ValueError("does not exist")
    return aware


def timestamp_ns(
    raw: Any, spec: TimestampSpec, where: str, zone: tzinfo | None, *, text_numbers: bool = False
) -> int:
    """A source time as UTC ns; ``text_numbers``: epoch numbers may come as text (csv)."""
    if isinstance(raw, bool):
        raise PayloadError(f"{where} is a boolean")
    if isinstance(raw, str) and text_numbers and spec.format != "iso8601":
        try:
            raw = _number(raw.strip())
        except ValueError:
            if spec.format != "auto":
                raise PayloadError(
                    f"{where}: expected a number ({spec.format}), got {raw[:64]!r}"
                ) from None
    if isinstance(raw, int | float):
        if spec.format == "iso8601":
            raise PayloadError(f"{where}: expected ISO 8601 text, got {raw!r}")
        if not math.isfinite(raw):
            raise PayloadError(f"{where} is not finite: {raw!r}")
        if abs(raw) > 1e19:
            raise PayloadError(f"{where} is out of range: {raw!r}")
        return _epoch(raw, spec.format)
    if isinstance(raw, str):
        if spec.format not in ("auto", "iso8601"):
            raise PayloadError(f"{where}: expected a number ({spec.format})")
        try:
            dt = datetime.fromisoformat(raw)
        except ValueError as err:
            raise PayloadError(f"{where}: not ISO 8601: {raw[:64]!r}") from err
        if dt.tzinfo is None:
            if zone is None:
                raise PayloadError(
                    f"{where}: no time zone in {raw[:64]!r}; for a device sending local "
                    "time set timestamp.timezone (e.g. Europe/Paris)"
                )
            try:
                dt = local_to_utc(dt, zone)
            except ValueError:
                raise PayloadError(
                    f"{where}: {raw[:64]!r} does not exist in {zone} (the clocks went "
                    "forward over that time)"
                ) from None
        return datetime_to_ns(dt)
    raise PayloadError(f"{where} has type {type(raw).__name__}")


def parse_timestamp(
    doc: Any, spec: TimestampSpec, receive_ns: int, zone: tzinfo | None = None
) -> int:
    """The time at ``spec.path`` of a JSON document (receive time without a path)."""
    if spec.path is None:
        return receive_ns
    raw = json_path(doc, spec.path)
    if raw is MISSING:
        raise PayloadError(f"timestamp field {spec.path!r} is missing")
    return timestamp_ns(raw, spec, f"timestamp field {spec.path!r}", zone)


# ------------------------------------------------------------------------------ values
def _number(text: str) -> int | float:
    """A decimal number written as text (ValueError when it is not one)."""
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)  # ValueError past Python's 4300 digits: not a number we take
    if not _NUMBER.match(text):
        raise ValueError(text)
    return float(text)


def _map_key(value: object) -> str | None:
    """The value_map word of a payload value (None: numbers of other kinds are not looked up)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.strip().casefold()
    if isinstance(value, int):
        return str(value)
    return None


def _mapped(value: object, spec: _Spec, where: str) -> tuple[bool, object]:
    """(found, value) through the value_map; a word or boolean it lacks raises PayloadError."""
    if spec.value_map is None:
        return False, value
    key = _map_key(value)
    if key is not None and key in spec.value_map:
        return True, spec.value_map[key]
    if isinstance(value, str | bool):
        words = ", ".join(list(spec.value_map)[:8])
        raise PayloadError(f"{where}: {value!r:.40} is not in value_map ({words})")
    return False, value


def read_text_value(
    text: str, spec: _Spec, signal: str, where: str, unit: str | None
) -> tuple[object, str | None]:
    """(value, unit) of one value written as text; ``unit`` is the configured default."""
    word = text.strip()
    if spec.value_map is not None and word.casefold() in spec.value_map:
        return spec.value_map[word.casefold()], unit
    if signal_kind(signal) == "text":
        return word, None  # a program name may well be "1234"
    m = _NUMBER_UNIT.match(word)
    if m is not None:
        try:
            number = _number(m.group(1))
        except ValueError:
            raise PayloadError(f"{where}: number {word[:40]!r} is too long") from None
        # the unit written after the number wins; the pipeline takes only known units
        return scaled(number, spec.scale, spec.offset), m.group(2) or unit
    if spec.value_map is not None:
        words = ", ".join(list(spec.value_map)[:8])
        raise PayloadError(f"{where}: {word[:40]!r} is not in value_map ({words})")
    raise PayloadError(
        f"{where}: {word[:40]!r} is not a number for signal {signal!r}; "
        "map words to values with value_map"
    )


def _json_value(value: Any, spec: FieldSpec | ValueSpec, where: str) -> object:
    found, mapped = _mapped(value, spec, where)
    return mapped if found else scaled(value, spec.scale, spec.offset)


def _unit(doc: Any, spec: FieldSpec | ValueSpec) -> str | None:
    if spec.unit_path:
        unit = json_path(doc, spec.unit_path)
        if isinstance(unit, str):
            return unit
    return spec.unit


def _text(payload: bytes) -> str:
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError as err:
        raise PayloadError(f"payload is not UTF-8 text: {err}") from err


# ------------------------------------------------------------------------------ formats
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
    if sub.format == "text":
        return _decode_text(sub, machine, captured, topic, payload, receive_ns)
    if sub.format == "csv":
        return _decode_csv(compiled, machine, topic, payload, receive_ns)
    if sub.format == "keyvalue":
        return _decode_keyvalue(compiled, machine, topic, payload, receive_ns)
    return _decode_json(compiled, machine, captured, topic, payload, receive_ns)


def _value_signal(sub: Subscription, captured: dict[str, str]) -> str:
    signal = sub.signal or captured.get("signal", "")
    return sub.signals.get(signal, signal)


def _decode_json(
    compiled: CompiledSubscription,
    machine: str,
    captured: dict[str, str],
    topic: str,
    payload: bytes,
    receive_ns: int,
) -> list[RawSample]:
    sub = compiled.sub
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as err:
        raise PayloadError(f"payload is not valid JSON: {err}") from err
    if sub.value is not None:
        spec = sub.value
        signal = _value_signal(sub, captured)
        if spec.path is None:
            value, unit, ts_ns = doc, spec.unit, receive_ns
        else:
            if not isinstance(doc, dict):
                raise PayloadError(f"expected a JSON object, got {type(doc).__name__}")
            value = json_path(doc, spec.path)
            if value is MISSING:
                raise PayloadError(f"value field {spec.path!r} is missing")
            unit = _unit(doc, spec)
            ts_ns = parse_timestamp(doc, sub.timestamp, receive_ns, compiled.zone)
        value = _json_value(value, spec, f"value field {spec.path!r}")
        return [RawSample(machine, signal, value, unit, ts_ns, "good", topic)]
    if not isinstance(doc, dict):
        raise PayloadError(f"expected a JSON object, got {type(doc).__name__}")
    ts_ns = parse_timestamp(doc, sub.timestamp, receive_ns, compiled.zone)
    out = []
    for f in sub.fields:
        value = json_path(doc, f.path)
        if value is MISSING:
            continue  # a machine may leave out fields it has nothing to say about
        value = _json_value(value, f, f"field {f.path!r}")
        out.append(RawSample(machine, f.signal, value, _unit(doc, f), ts_ns, "good", topic))
    if not out:
        wanted = ", ".join(f.path for f in sub.fields)
        raise PayloadError(f"none of the mapped fields ({wanted}) is in the payload")
    return out


def _decode_text(
    sub: Subscription,
    machine: str,
    captured: dict[str, str],
    topic: str,
    payload: bytes,
    receive_ns: int,
) -> list[RawSample]:
    assert sub.value is not None  # the config gives a text subscription its value section
    text = _text(payload)
    if not text.strip():
        raise PayloadError("empty payload")
    signal = _value_signal(sub, captured)
    value, unit = read_text_value(text, sub.value, signal, "text payload", sub.value.unit)
    return [RawSample(machine, signal, value, unit, receive_ns, "good", topic)]


def _decode_csv(
    compiled: CompiledSubscription, machine: str, topic: str, payload: bytes, receive_ns: int
) -> list[RawSample]:
    sub = compiled.sub
    line = _text(payload).strip("\r\n")
    if "\n" in line or "\r" in line:
        raise PayloadError(f"expected one line of values, got {line.count(chr(10)) + 1} lines")
    if not line.strip():
        raise PayloadError("empty payload")
    try:
        cells = next(csv.reader([line], delimiter=sub.delimiter, strict=True))
    except csv.Error as err:
        raise PayloadError(f"not a CSV line: {err}") from err
    ts_column = sub.timestamp.column
    needed = max(i for i, c in enumerate(sub.columns) if c is not None) + 1
    if ts_column is not None:
        needed = max(needed, ts_column + 1)
    if len(cells) < needed:
        raise PayloadError(
            f"line has {len(cells)} values, the subscription's columns need {needed}"
        )
    ts_ns = receive_ns
    if ts_column is not None:
        where = f"timestamp column {ts_column}"
        ts_ns = timestamp_ns(
            cells[ts_column].strip(), sub.timestamp, where, compiled.zone, text_numbers=True
        )
    out = []
    for i, column in enumerate(sub.columns):
        if column is None or not cells[i].strip():
            continue  # an empty cell: nothing said about that signal
        where = f"column {i} ({column.signal})"
        value, unit = read_text_value(cells[i], column, column.signal, where, column.unit)
        out.append(RawSample(machine, column.signal, value, unit, ts_ns, "good", topic))
    if not out:
        raise PayloadError("every mapped column of the line is empty")
    return out


def parse_keyvalue(text: str) -> dict[str, str]:
    """``V1=230.5 V2=231 P:1200 unit`` → ``{"V1": "230.5", "V2": "231", "P": "1200 unit"}``.

    A word without ``=`` or ``:`` after a pair is that pair's unit (``V1=230.5 V``).
    """
    pairs: dict[str, str] = {}
    last: str | None = None
    for token in _KV_SPLIT.split(text.strip()):
        if not token:
            continue
        cut = min((i for i in (token.find("="), token.find(":")) if i >= 0), default=-1)
        if cut < 0 and last is not None:
            pairs[last] = f"{pairs[last]} {token}"
            last = None  # one unit per value
            continue
        if cut <= 0:
            raise PayloadError(f"{token[:40]!r} is not a key=value pair")
        key = token[:cut]
        if key in pairs:
            raise PayloadError(f"key {key[:40]!r} appears twice")
        pairs[key] = token[cut + 1 :]
        last = key
    return pairs


def _decode_keyvalue(
    compiled: CompiledSubscription, machine: str, topic: str, payload: bytes, receive_ns: int
) -> list[RawSample]:
    sub = compiled.sub
    pairs = parse_keyvalue(_text(payload))
    ts_ns = receive_ns
    if sub.timestamp.path is not None:
        raw = pairs.get(sub.timestamp.path)
        where = f"timestamp key {sub.timestamp.path!r}"
        if raw is None:
            raise PayloadError(f"{where} is missing")
        ts_ns = timestamp_ns(raw, sub.timestamp, where, compiled.zone, text_numbers=True)
    out = []
    for f in sub.fields:
        raw = pairs.get(f.path)
        if raw is None or not raw.strip():
            continue
        unit = f.unit
        if f.unit_path is not None and pairs.get(f.unit_path):
            unit = pairs[f.unit_path]
        value, unit = read_text_value(raw, f, f.signal, f"key {f.path!r}", unit)
        out.append(RawSample(machine, f.signal, value, unit, ts_ns, "good", topic))
    if not out:
        wanted = ", ".join(f.path for f in sub.fields)
        raise PayloadError(f"none of the mapped keys ({wanted}) is in the payload")
    return out


def availability(spec: AvailabilitySpec, payload: bytes) -> bool:
    """True for an online word, False for an offline one; PayloadError for anything else."""
    if spec.path is None:
        raw: object = _text(payload)
    else:
        try:
            doc = orjson.loads(payload)
        except orjson.JSONDecodeError as err:
            raise PayloadError(f"payload is not valid JSON: {err}") from err
        raw = json_path(doc, spec.path)
        if raw is MISSING:
            raise PayloadError(f"availability field {spec.path!r} is missing")
    word = _map_key(raw)
    if word in spec.online:
        return True
    if word in spec.offline:
        return False
    raise PayloadError(
        f"availability {raw!r:.40} is neither online ({', '.join(spec.online)}) "
        f"nor offline ({', '.join(spec.offline)})"
    )
