"""Decoding Sparkplug B payloads and the host's session rules, on payloads built with the
protobuf classes compiled from Eclipse Tahu's .proto (no broker)."""

from __future__ import annotations

import gzip
import re
import zlib

import pytest

from microfactory.gateway.adapters.sparkplug import sparkplug_b_pb2 as pb
from microfactory.gateway.adapters.sparkplug.nodes import EdgeNodes
from microfactory.gateway.adapters.sparkplug.payload import (
    COMPRESSED_UUID,
    Payload,
    Topic,
    decode,
    encode_rebirth,
    parse_topic,
)
from microfactory.gateway.sdk import PayloadError

TOPIC = "spBv1.0/G/DDATA/N/meter"


def build(seq: int | None = 1, timestamp: int | None = 1_700_000_000_000) -> pb.Payload:
    p = pb.Payload()
    if timestamp is not None:
        p.timestamp = timestamp
    if seq is not None:
        p.seq = seq
    return p


def add(p: pb.Payload, name: str | None = None, alias: int | None = None, **fields: object) -> None:
    m = p.metrics.add()
    if name is not None:
        m.name = name
    if alias is not None:
        m.alias = alias
    for key, value in fields.items():
        setattr(m, key, value)


def test_topics_are_split_and_other_topics_refused() -> None:
    assert parse_topic("spBv1.0/G/DDATA/N/meter") == Topic("G", "DDATA", "N", "meter")
    assert parse_topic("spBv1.0/G/NBIRTH/N") == Topic("G", "NBIRTH", "N", None)
    assert str(Topic("G", "NBIRTH", "N")) == "spBv1.0/G/NBIRTH/N"
    for other in (
        "spBv1.0/STATE/host",
        "spAv1.0/G/NDATA/N",
        "spBv1.0/G/XDATA/N",
        "spBv1.0/G/DDATA/N/d/extra",
        "spBv1.0/G/NDATA",
        "spBv1.0//NDATA/N",
    ):
        assert parse_topic(other) is None, other


def test_every_scalar_datatype_becomes_a_python_value() -> None:
    p = build()
    add(p, "i8", datatype=pb.Int8, int_value=0xFFFFFFFF)  # -1, sign-extended (spec)
    add(p, "i8w", datatype=pb.Int8, int_value=0xFE)  # -2, in its own width
    add(p, "i16", datatype=pb.Int16, int_value=0xFFFF8000)  # -32768
    add(p, "i32", datatype=pb.Int32, int_value=0x80000000)  # -2**31
    add(p, "i64", datatype=pb.Int64, long_value=2**64 - 5)  # -5
    add(p, "u32", datatype=pb.UInt32, long_value=4_000_000_000)
    add(p, "u64", datatype=pb.UInt64, long_value=2**63)
    add(p, "f", datatype=pb.Float, float_value=1.5)
    add(p, "d", datatype=pb.Double, double_value=230.25)
    add(p, "b", datatype=pb.Boolean, boolean_value=True)
    add(p, "s", datatype=pb.String, string_value="RUN")
    payload = decode(TOPIC, p.SerializeToString())
    values = {m.name: m.value for m in payload.metrics}
    assert values == {
        "i8": -1,
        "i8w": -2,
        "i16": -32768,
        "i32": -(2**31),
        "i64": -5,
        "u32": 4_000_000_000,
        "u64": 2**63,
        "f": 1.5,
        "d": 230.25,
        "b": True,
        "s": "RUN",
    }
    assert isinstance(values["b"], bool)
    assert payload.seq == 1 and payload.timestamp_ms == 1_700_000_000_000


def test_null_unit_timestamp_and_unsupported_types() -> None:
    p = build()
    add(p, "gone", datatype=pb.Double, is_null=True)
    add(p, "p", alias=4, datatype=pb.Double, double_value=2.0, timestamp=1_700_000_000_123)
    p.metrics[-1].properties.keys.append("engUnit")
    p.metrics[-1].properties.values.add(type=pb.String, string_value="kW")
    add(p, "blob", datatype=pb.Bytes, bytes_value=b"\x00\x01")
    gone, power, blob = decode(TOPIC, p.SerializeToString()).metrics
    assert gone.is_null and gone.value is None
    assert (power.value, power.unit, power.timestamp_ms, power.alias) == (
        2.0,
        "kW",
        1_700_000_000_123,
        4,
    )
    assert blob.value is None and blob.unsupported == "blob: Bytes"


@pytest.mark.parametrize(
    "data",
    [b"\xff\xff\xff\xff", b"\x0a\x05abc", b"", b"hello, not protobuf"],
    ids=["corrupt", "truncated", "empty", "text"],
)
def test_malformed_payloads_raise_naming_the_topic(data: bytes) -> None:
    with pytest.raises(PayloadError, match=re.escape(TOPIC)):
        decode(TOPIC, data)


def test_compressed_payloads_are_inflated() -> None:
    inner = build(seq=9)
    add(inner, "d", datatype=pb.Double, double_value=3.0)
    for algorithm, packed in (
        (None, zlib.compress(inner.SerializeToString())),
        ("GZIP", gzip.compress(inner.SerializeToString())),
    ):
        outer = pb.Payload(uuid=COMPRESSED_UUID, body=packed)
        if algorithm:
            add(outer, "algorithm", datatype=pb.String, string_value=algorithm)
        payload = decode(TOPIC, outer.SerializeToString())
        assert payload.seq == 9 and payload.metrics[0].value == 3.0
    bomb = pb.Payload(uuid=COMPRESSED_UUID, body=zlib.compress(b"\0" * (17 * 1024 * 1024)))
    with pytest.raises(PayloadError, match="inflates past"):
        decode(TOPIC, bomb.SerializeToString())


def test_rebirth_command_is_the_spec_one() -> None:
    cmd = pb.Payload.FromString(encode_rebirth(1_700_000_000_000))
    (metric,) = cmd.metrics
    assert metric.name == "Node Control/Rebirth"
    assert metric.datatype == pb.Boolean and metric.boolean_value is True


# ---------------------------------------------------------------------- session rules
def message(seq: int | None, *metrics: tuple[str | None, int | None, object]) -> Payload:
    p = build(seq=seq)
    for name, alias, value in metrics:
        if isinstance(value, bool):
            add(p, name, alias, datatype=pb.Boolean, boolean_value=value)
        elif isinstance(value, int) and name == "bdSeq":
            add(p, name, alias, datatype=pb.UInt64, long_value=value)
        else:
            add(p, name, alias, datatype=pb.Double, double_value=value)
    return decode("t", p.SerializeToString())


def t(kind: str, device: str | None = None) -> Topic:
    return Topic("G", kind, "N", device)


def born(nodes: EdgeNodes, bd_seq: int = 0) -> None:
    nodes.handle(t("NBIRTH"), message(0, ("bdSeq", None, bd_seq)))
    out = nodes.handle(t("DBIRTH", "m"), message(1, ("P", 1, 5.0), ("Q", 2, 6.0)))
    assert [(v.name, v.value) for v in out.values] == [("P", 5.0), ("Q", 6.0)]


def test_data_by_alias_is_resolved_through_the_birth() -> None:
    nodes = EdgeNodes()
    born(nodes)
    out = nodes.handle(t("DDATA", "m"), message(2, (None, 2, 7.5)))
    assert [(v.device, v.name, v.value) for v in out.values] == [("m", "Q", 7.5)]
    assert out.seq_gap is None and out.outdated is None


def test_seq_gap_wraps_at_256_and_wants_a_rebirth_once_per_interval() -> None:
    nodes = EdgeNodes()
    born(nodes)
    for seq in range(2, 256):
        assert nodes.handle(t("DDATA", "m"), message(seq, (None, 1, 1.0))).seq_gap is None
    assert nodes.handle(t("DDATA", "m"), message(0, (None, 1, 1.0))).seq_gap is None  # wrap
    out = nodes.handle(t("DDATA", "m"), message(2, (None, 1, 2.0)))  # 1 was lost
    assert out.seq_gap == (1, 2)
    assert out.values, "the values of the message after a gap are still good"
    assert nodes.rebirth_due("N", now_s=100.0, interval_s=5.0) == "seq gap: expected 1, got 2"
    assert nodes.rebirth_due("N", now_s=102.0, interval_s=5.0) is None  # rate-limited
    assert nodes.rebirth_due("N", now_s=105.0, interval_s=5.0) is not None  # still outdated
    born(nodes)
    assert nodes.rebirth_due("N", now_s=200.0, interval_s=5.0) is None  # births are current


def test_unknown_alias_and_data_before_birth_want_a_rebirth() -> None:
    nodes = EdgeNodes()
    before = nodes.handle(t("DDATA", "m"), message(5, (None, 1, 1.0)))
    assert before.dropped and before.outdated is not None and not before.values
    assert before.outdated.startswith("data before birth")
    born(nodes)
    out = nodes.handle(t("DDATA", "m"), message(2, (None, 99, 1.0), (None, 1, 3.0)))
    assert out.unknown_aliases == 1 and out.outdated == "unknown alias: 99"
    assert [(v.name, v.value) for v in out.values] == [("P", 3.0)]
    other = nodes.handle(t("DDATA", "x"), message(3, (None, 1, 1.0)))
    assert other.dropped and other.outdated is not None and "before its DBIRTH" in other.outdated


def test_a_stale_ndeath_does_not_kill_the_new_session() -> None:
    nodes = EdgeNodes()
    born(nodes, bd_seq=3)
    stale = nodes.handle(t("NDEATH"), message(None, ("bdSeq", None, 2)))
    assert stale.stale_death and stale.died is None and nodes.alive("N")
    death = nodes.handle(t("NDEATH"), message(None, ("bdSeq", None, 3)))
    assert death.died == "node" and not nodes.alive("N")
    after = nodes.handle(t("DDATA", "m"), message(4, (None, 1, 1.0)))
    assert after.dropped, "data after a death needs a new birth"


def test_ddeath_ends_the_device_only() -> None:
    nodes = EdgeNodes()
    born(nodes)
    assert nodes.handle(t("DDEATH", "m"), message(2)).died == "device"
    assert nodes.alive("N")
    assert nodes.handle(t("DDATA", "m"), message(3, (None, 1, 1.0))).dropped
