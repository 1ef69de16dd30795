"""DataValues as real servers send them become the samples the config asks for."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast

import pytest
from asyncua import ua
from asyncua.ua.status_codes import StatusCodes

from microfactory.gateway.adapters.opcua.config import NodeSpec
from microfactory.gateway.adapters.opcua.values import (
    NodeReader,
    ValueProblem,
    enum_map_from,
    pick_time_ns,
)
from microfactory.gateway.config import PipelineSettings
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.sdk import RawSample

T0 = datetime(2026, 12, 1, 8, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 12, 1, 8, 0, 1, tzinfo=UTC)
NOW_NS = int(datetime(2026, 12, 1, 9, 0, tzinfo=UTC).timestamp() * 1e9)


def dv(
    value: Any,
    vtype: ua.VariantType | None = None,
    status: int = StatusCodes.Good,
    source: datetime | None = T0,
    server: datetime | None = T1,
) -> ua.DataValue:
    variant = ua.Variant(value, vtype) if vtype is not None else ua.Variant(value)
    return ua.DataValue(
        Value=None if value is None else variant,
        StatusCode=ua.StatusCode(ua.UInt32(status)),
        SourceTimestamp=cast(ua.DateTime, source),
        ServerTimestamp=cast(ua.DateTime, server),
    )


def reader(**spec: Any) -> NodeReader:
    spec.setdefault("node", "s=N")
    return NodeReader(NodeSpec(**spec), "mill-1", spec.pop("timestamp", None) or "source")


def one(r: NodeReader, value: ua.DataValue) -> RawSample:
    out = r.samples(value)
    assert len(out) == 1, out
    return out[0]


def test_bad_status_without_value_is_a_bad_sample_named_by_its_status() -> None:
    s = one(reader(signal="power_active"), dv(None, status=StatusCodes.BadSensorFailure))
    assert (s.value, s.quality, s.signal) == ("BadSensorFailure", "bad", "power_active")
    stored = Normaliser(PipelineSettings())(s, NOW_NS)
    assert (stored.value, stored.quality, stored.unit) == ("BadSensorFailure", "bad", "")


def test_uncertain_value_is_kept_with_its_quality() -> None:
    s = one(
        reader(signal="power_active", unit="kW"),
        dv(2.5, ua.VariantType.Double, status=StatusCodes.UncertainLastUsableValue),
    )
    assert (s.value, s.quality, s.unit) == (2.5, "uncertain", "kW")


def test_good_status_without_value_yields_nothing() -> None:
    assert reader(signal="power_active").samples(dv(None)) == []


def test_array_index_and_elements() -> None:
    phases = dv([230.1, 231.2, 229.3], ua.VariantType.Double)
    assert one(reader(signal="voltage_l2", index=1, unit="V"), phases).value == 231.2
    out = reader(elements=["voltage_l1", "voltage_l2", "voltage_l3"], unit="V").samples(phases)
    assert [(s.signal, s.value) for s in out] == [
        ("voltage_l1", 230.1),
        ("voltage_l2", 231.2),
        ("voltage_l3", 229.3),
    ]
    with pytest.raises(ValueProblem, match="holds an array of 3 values; write index"):
        reader(signal="voltage_l1").samples(phases)
    with pytest.raises(ValueProblem, match="index 5 is past the array's 3 values"):
        reader(signal="voltage_l1", index=5).samples(phases)


def test_integer_codes_through_a_value_map_and_unknown_codes_are_bad() -> None:
    r = reader(signal="state", value_map={0: "off", 1: "idle", "2": "running", 3: "fault"})
    assert one(r, dv(2, ua.VariantType.Int16)).value == "running"
    unknown = one(r, dv(7, ua.VariantType.Int16))
    assert (unknown.value, unknown.quality) == ("7", "bad")


def test_integer_on_a_text_signal_without_a_map_is_a_problem_naming_the_fix() -> None:
    with pytest.raises(ValueProblem, match="add a value_map"):
        reader(signal="state").samples(dv(2, ua.VariantType.Int16))


def test_enumeration_map_from_the_server() -> None:
    strings = [ua.LocalizedText("Off"), ua.LocalizedText("Running")]
    assert enum_map_from(strings, None) == {0: "Off", 1: "Running"}
    values = [
        ua.EnumValueType(Value=10, DisplayName=ua.LocalizedText("Idle")),
        ua.EnumValueType(Value=20, DisplayName=ua.LocalizedText("Running")),
    ]
    assert enum_map_from(None, values) == {10: "Idle", 20: "Running"}
    r = reader(signal="mode")
    r.enum_map = {10: "Idle", 20: "Running"}
    assert one(r, dv(20, ua.VariantType.Int32)).value == "Running"


def test_localized_text_boolean_and_datetime() -> None:
    r = reader(signal="state", value_map={"Executing": "running", "NotExecuting": "idle"})
    assert one(r, dv(ua.LocalizedText("Executing"))).value == "running"
    assert one(reader(signal="door_open"), dv(True)).value == 1.0
    assert one(reader(signal="online"), dv(False)).value is False  # stored 0.0 by the pipeline
    with pytest.raises(ValueProblem, match="Boolean for numeric signal 'power_active'"):
        reader(signal="power_active").samples(dv(True))
    assert one(reader(signal="started_at"), dv(T0)).value == "2026-12-01T08:00:00Z"


def test_timestamp_choice() -> None:
    value = dv(1.0, ua.VariantType.Double)
    assert pick_time_ns(value, "source") == int(T0.timestamp()) * 10**9
    assert pick_time_ns(value, "server") == int(T1.timestamp()) * 10**9
    assert pick_time_ns(value, "receive") is None
    no_source = dv(1.0, ua.VariantType.Double, source=None)
    assert pick_time_ns(no_source, "source") == int(T1.timestamp()) * 10**9


def test_frozen_source_timestamp_is_counted() -> None:
    r = reader(signal="power_active")
    for v in (1.0, 2.0, 3.0):
        r.samples(dv(v, ua.VariantType.Double))
    assert r.repeated_timestamps == 2
    r.samples(dv(3.0, ua.VariantType.Double))  # same value again: nothing new to lose
    assert r.repeated_timestamps == 2
