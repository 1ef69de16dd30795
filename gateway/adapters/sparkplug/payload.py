"""Sparkplug B topics and payloads into plain values: the one module that reads protobuf.

The payload schema is Eclipse Tahu's ``sparkplug_b.proto`` (next to this file), compiled into
``sparkplug_b_pb2.py``; see docs/sparkplug.md for why that and not a Sparkplug package.
Everything here is pure: bytes in, :class:`Payload` out, or :class:`PayloadError` naming the
topic and what is wrong, so a malformed message becomes a dead letter, never a crash.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import IntEnum

from google.protobuf.message import DecodeError

from ...sdk import PayloadError
from . import sparkplug_b_pb2 as pb
from .config import NAMESPACE

COMPRESSED_UUID = "SPBV1.0_COMPRESSED"  # Tahu's compressed payload: the real one in ``body``
MAX_INFLATED_BYTES = 16 * 1024 * 1024  # a compressed payload may not unfold past this
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"
UNIT_PROPERTY = "engUnit"  # the unit of a metric, as Ignition and Tahu publish it

MESSAGE_TYPES = frozenset(
    {"NBIRTH", "NDEATH", "DBIRTH", "DDEATH", "NDATA", "DDATA", "NCMD", "DCMD", "STATE"}
)


class DataType(IntEnum):
    """Sparkplug B 3.0 metric datatypes (the ``DataType`` enum of the .proto) we read."""

    Unknown = 0
    Int8 = 1
    Int16 = 2
    Int32 = 3
    Int64 = 4
    UInt8 = 5
    UInt16 = 6
    UInt32 = 7
    UInt64 = 8
    Float = 9
    Double = 10
    Boolean = 11
    String = 12
    DateTime = 13
    Text = 14
    UUID = 15


_SIGNED_BITS = {DataType.Int8: 8, DataType.Int16: 16, DataType.Int32: 32, DataType.Int64: 64}


@dataclass(frozen=True, slots=True)
class Topic:
    """``spBv1.0/<group>/<type>/<edge_node>[/<device>]``, split."""

    group: str
    message_type: str
    edge_node: str
    device: str | None = None

    def __str__(self) -> str:
        tail = f"/{self.device}" if self.device is not None else ""
        return f"{NAMESPACE}/{self.group}/{self.message_type}/{self.edge_node}{tail}"


@dataclass(frozen=True, slots=True)
class Metric:
    """One metric of a payload; ``value`` is None when the metric is null or of a type we skip.

    ``unsupported`` names the datatype of a value we do not turn into a sample (a DataSet, a
    Template, bytes, an array).
    """

    name: str | None
    alias: int | None
    datatype: int | None
    value: object
    is_null: bool = False
    timestamp_ms: int | None = None
    unit: str | None = None
    unsupported: str | None = None


@dataclass(frozen=True, slots=True)
class Payload:
    timestamp_ms: int | None
    seq: int | None
    metrics: tuple[Metric, ...]

    def metric(self, name: str) -> Metric | None:
        """The first metric called ``name`` (``bdSeq``, a command), or None."""
        return next((m for m in self.metrics if m.name == name), None)


def parse_topic(topic: str) -> Topic | None:
    """The parts of a Sparkplug B topic, or None for a topic that is not one."""
    levels = topic.split("/")
    if len(levels) < 3 or levels[0] != NAMESPACE:
        return None
    if levels[1] == "STATE":  # spBv1.0/STATE/<host id>: a primary host's, not an edge node's
        return None
    if len(levels) not in (4, 5) or levels[2] not in MESSAGE_TYPES or not all(levels[1:]):
        return None
    return Topic(levels[1], levels[2], levels[3], levels[4] if len(levels) == 5 else None)


def decode(topic: str, data: bytes) -> Payload:
    """A Sparkplug B payload in plain values; PayloadError naming ``topic`` if it is not one."""
    message = _parse(topic, data)
    if message.HasField("uuid") and message.uuid == COMPRESSED_UUID:
        message = _parse(topic, _inflate(topic, message))
    metrics = tuple(_metric(topic, i, m) for i, m in enumerate(message.metrics))
    return Payload(
        timestamp_ms=message.timestamp if message.HasField("timestamp") else None,
        seq=message.seq if message.HasField("seq") else None,
        metrics=metrics,
    )


def encode_rebirth(timestamp_ms: int) -> bytes:
    """The NCMD payload asking an edge node for its births again (spec 3.0, 6.4.16)."""
    message = pb.Payload(timestamp=timestamp_ms)
    metric = message.metrics.add()
    metric.name = REBIRTH_METRIC
    metric.timestamp = timestamp_ms
    metric.datatype = DataType.Boolean
    metric.boolean_value = True
    return bytes(message.SerializeToString())


def _parse(topic: str, data: bytes) -> pb.Payload:
    message = pb.Payload()
    try:
        message.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as err:  # upb raises DecodeError
        raise PayloadError(f"{topic}: not a Sparkplug B protobuf payload ({err})") from err
    if not message.ListFields():  # bytes that happen to parse, as unknown fields only
        raise PayloadError(f"{topic}: not a Sparkplug B payload (no Sparkplug field in it)")
    return message


def _inflate(topic: str, message: pb.Payload) -> bytes:
    """The body of a compressed payload, DEFLATE (the default) or GZIP, bounded in size."""
    algorithm = "DEFLATE"
    for m in message.metrics:
        if m.name == "algorithm" and m.WhichOneof("value") == "string_value":
            algorithm = m.string_value.upper()
    if algorithm not in ("DEFLATE", "GZIP"):
        raise PayloadError(f"{topic}: compressed payload with unknown algorithm {algorithm!r}")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if algorithm == "GZIP" else 0))
    try:
        out = inflater.decompress(message.body, MAX_INFLATED_BYTES)
    except zlib.error as err:
        raise PayloadError(f"{topic}: compressed payload does not inflate ({err})") from err
    if inflater.unconsumed_tail:
        raise PayloadError(f"{topic}: compressed payload inflates past {MAX_INFLATED_BYTES} bytes")
    return out


def _metric(topic: str, index: int, m: pb.Payload.Metric) -> Metric:
    datatype = m.datatype if m.HasField("datatype") else None
    name = m.name if m.HasField("name") else None
    is_null = m.HasField("is_null") and m.is_null
    kind = None if is_null else m.WhichOneof("value")
    value: object = None  # null, or no value at all (a birth may announce a metric)
    unsupported: str | None = None
    if kind in ("int_value", "long_value"):
        raw = m.int_value if kind == "int_value" else m.long_value
        value = _signed(raw, datatype, 32 if kind == "int_value" else 64)
        if datatype == DataType.Boolean:  # some nodes send booleans as 0/1 integers
            value = bool(value)
    elif kind in ("float_value", "double_value"):
        value = m.float_value if kind == "float_value" else m.double_value
    elif kind == "boolean_value":
        value = m.boolean_value
    elif kind == "string_value":
        value = m.string_value
    elif kind is not None:  # bytes, a DataSet, a Template, an extension
        where = name if name is not None else f"metrics[{index}]"
        unsupported = f"{where}: {_type_name(datatype) if datatype is not None else kind}"
    return Metric(
        name=name,
        alias=m.alias if m.HasField("alias") else None,
        datatype=datatype,
        value=value,
        is_null=is_null,
        timestamp_ms=m.timestamp if m.HasField("timestamp") else None,
        unit=_unit(m),
        unsupported=unsupported,
    )


def _signed(raw: int, datatype: int | None, field_bits: int) -> int:
    """A signed datatype's value from the unsigned protobuf field (two's complement).

    The spec sign-extends Int8/Int16 into the 32-bit field; some nodes store them in their own
    width (255 for -1 as Int8): both read as the same number.
    """
    bits = next((b for t, b in _SIGNED_BITS.items() if t == datatype), None)
    if bits is None:
        return raw
    if (1 << (bits - 1)) <= raw < (1 << bits):
        return raw - (1 << bits)
    if raw >= (1 << (field_bits - 1)):
        return raw - (1 << field_bits)
    return raw


def _unit(m: pb.Payload.Metric) -> str | None:
    """The metric's ``engUnit`` property (a string), if its birth carries one."""
    if not m.HasField("properties"):
        return None
    props = m.properties
    for key, value in zip(props.keys, props.values, strict=False):
        if key == UNIT_PROPERTY and value.WhichOneof("value") == "string_value":
            unit = value.string_value.strip()
            return unit or None
    return None


def _type_name(datatype: int) -> str:
    try:
        return str(pb.DataType.Name(datatype))
    except ValueError:
        return f"datatype {datatype}"
