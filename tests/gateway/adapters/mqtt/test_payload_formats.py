"""Real devices' payloads through the MQTT decoder: text, CSV, key=value, local times.

Pure: a subscription as the site config writes it, a payload as the device sends it, and
the samples the pipeline would then store (the gateway's real normaliser runs on them).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from microfactory.gateway.adapters.mqtt.config import MqttAdapterConfig, Subscription
from microfactory.gateway.adapters.mqtt.payload import (
    CompiledSubscription,
    availability,
    decode,
    parse_keyvalue,
)
from microfactory.gateway.config import PipelineSettings
from microfactory.gateway.errors import PayloadError
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.sample import RawSample, Sample
from microfactory.gateway.units import KNOWN_UNITS

RECEIVE_NS = 1_718_000_000_000_000_000  # 2024-06-10T06:13:20Z
NOW_NS = RECEIVE_NS + 10**9


def _decode(sub: dict[str, Any], payload: bytes | str, topic: str = "t/x") -> list[RawSample]:
    compiled = CompiledSubscription(Subscription.model_validate(sub))
    captured = compiled.match(topic)
    assert captured is not None, f"{sub['topic']} does not match {topic}"
    data = payload.encode() if isinstance(payload, str) else payload
    return decode(compiled, captured, topic, data, RECEIVE_NS)


def _stored(samples: list[RawSample]) -> list[Sample]:
    normalise = Normaliser(PipelineSettings())
    return [normalise(s, NOW_NS) for s in samples]


def _re(text: str) -> str:
    return re.escape(text)


def _utc_ns(text: str) -> int:
    dt = datetime.fromisoformat(text).astimezone(UTC)
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


TEXT: dict[str, Any] = {"topic": "t/x", "machine": "m1", "format": "text"}


# --------------------------------------------------------------------------- text
@pytest.mark.parametrize(
    ("signal", "value", "payload", "stored"),
    [
        ("voltage_l1", {"path": None}, "230.5", (230.5, "V")),
        ("voltage_l1", {"path": None}, " 230.5 V\n", (230.5, "V")),
        ("energy_active", {"path": None}, "1.2kWh", (1200.0, "Wh")),
        ("energy_active", {"path": None, "unit": "kWh"}, "3", (3000.0, "Wh")),
        ("current_l1", {"path": None}, "520 mA", (0.52, "A")),
        ("frequency", {"path": None}, "50.02 Hz", (50.02, "Hz")),
        ("power_active", {"path": None, "scale": 0.1}, "12000", (1200.0, "W")),
        ("power_factor", {"path": None}, "95 %", (0.95, "")),
        ("online", {"path": None, "value_map": {"ON": 1, "OFF": 0}}, "ON", (1.0, "")),
        ("online", {"path": None, "value_map": {"ON": 1, "OFF": 0}}, "off", (0.0, "")),
        ("state", {"path": None, "value_map": {"RUN": "running"}}, "run", ("running", "")),
        ("program", {"path": None}, "1234", ("1234", "")),  # a program name, not a number
        ("state", {}, "idle", ("idle", "")),  # value.path unset: the whole payload for text
    ],
)
def test_text_payloads(
    signal: str, value: dict[str, Any], payload: str, stored: tuple[object, str]
) -> None:
    samples = _decode({**TEXT, "signal": signal, "value": value}, payload)
    assert [(s.signal, s.ts_ns) for s in samples] == [(signal, RECEIVE_NS)]
    [sample] = _stored(samples)
    got = sample.value if isinstance(sample.value, str) else pytest.approx(sample.value)
    assert (got, sample.unit) == stored


@pytest.mark.parametrize(
    ("signal", "value", "payload", "reason"),
    [
        ("online", {"path": None}, "ON", "'ON' is not a number for signal 'online'; map words"),
        ("online", {"path": None, "value_map": {"ON": 1}}, "BLINK", "not in value_map (on)"),
        ("voltage_l1", {"path": None}, "   ", "empty payload"),
        ("voltage_l1", {"path": None}, b"\xff230", "not UTF-8"),
        ("voltage_l1", {"path": None}, "1" * 5000, "too long"),
    ],
)
def test_text_payloads_refused_with_reason(
    signal: str, value: dict[str, Any], payload: str | bytes, reason: str
) -> None:
    with pytest.raises(PayloadError, match=_re(reason)):
        _decode({**TEXT, "signal": signal, "value": value}, payload)


@pytest.mark.parametrize(
    ("signal", "payload", "reason"),
    [
        ("power_active", "230 V", "measured in 'W'; cannot convert from 'V'"),
        ("voltage_l1", "230.5 volts!", "unknown unit 'volts!'"),
        ("x_level", "230.5 furlongs", "signal 'x_level': unknown unit 'furlongs'"),
        ("voltage_l1", "230.5 V\x1b[2J", "control characters"),
        ("voltage_l1", "230.5 " + "V" * 20, "longer than 16 characters"),
    ],
)
def test_text_unit_refused_by_the_pipeline(signal: str, payload: str, reason: str) -> None:
    """The unit after the number goes on with the sample; the pipeline takes known units only."""
    samples = _decode({**TEXT, "signal": signal, "value": {"path": None}}, payload)
    with pytest.raises(PayloadError, match=_re(reason)):
        _stored(samples)


# --------------------------------------------------------------------------- csv
CSV: dict[str, Any] = {"topic": "meter/{machine}/csv", "format": "csv"}


def test_csv_line_to_three_phases() -> None:
    sub = {**CSV, "columns": ["voltage_l1", "voltage_l2", "voltage_l3"]}
    samples = _decode(sub, "230.5,231.0,229.8\r\n", "meter/m1/csv")
    assert [(s.machine, s.signal, s.value, s.ts_ns) for s in samples] == [
        ("m1", "voltage_l1", 230.5, RECEIVE_NS),
        ("m1", "voltage_l2", 231.0, RECEIVE_NS),
        ("m1", "voltage_l3", 229.8, RECEIVE_NS),
    ]


def test_csv_units_skipped_columns_timestamp_and_delimiter() -> None:
    sub = {
        **CSV,
        "delimiter": ";",
        "timestamp": {"column": 0, "format": "iso8601", "timezone": "Europe/Paris"},
        "columns": [
            None,
            {"signal": "current_l1", "unit": "mA"},
            None,
            {"signal": "energy_active", "unit": "kWh"},
            "power_active",
        ],
    }
    samples = _decode(sub, '2024-01-15T10:30:00;520;"x;y";12.5;1.2 kW;extra', "meter/m2/csv")
    ts = _utc_ns("2024-01-15T09:30:00+00:00")  # CET is UTC+1 in January
    stored = _stored(samples)
    assert [(s.signal, s.value, s.unit, s.ts_ns) for s in stored] == [
        ("current_l1", pytest.approx(0.52), "A", ts),
        ("energy_active", 12500.0, "Wh", ts),
        ("power_active", 1200.0, "W", ts),
    ]


def test_csv_epoch_column_and_empty_cells() -> None:
    sub = {
        **CSV,
        "timestamp": {"column": 2, "format": "epoch_s"},
        "columns": ["voltage_l1", "voltage_l2", None],
    }
    samples = _decode(sub, ",231,1718000000", "meter/m1/csv")
    assert [(s.signal, s.value, s.ts_ns) for s in samples] == [
        ("voltage_l2", 231, 1_718_000_000 * 10**9)
    ]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("230.5,231.0", "line has 2 values, the subscription's columns need 3"),
        ("230.5,231.0,229.8\n230,231,232", "expected one line of values, got 2 lines"),
        ("230.5,abc,229.8", "column 1 (voltage_l2): 'abc' is not a number"),
        ("", "empty payload"),
        ('230.5,"231,229.8', "not a CSV line"),
    ],
)
def test_csv_refused_with_reason(payload: str, reason: str) -> None:
    sub = {**CSV, "columns": ["voltage_l1", "voltage_l2", "voltage_l3"]}
    with pytest.raises(PayloadError, match=_re(reason)):
        _decode(sub, payload, "meter/m1/csv")


# --------------------------------------------------------------------------- keyvalue
KV: dict[str, Any] = {"topic": "t/x", "machine": "m1", "format": "keyvalue"}


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("V1=230.5 V2=231.0 P=1200", {"V1": "230.5", "V2": "231.0", "P": "1200"}),
        ("V1:230.5, V2:231.0; P:1200", {"V1": "230.5", "V2": "231.0", "P": "1200"}),
        ("V1=230.5 V P=1.2 kW", {"V1": "230.5 V", "P": "1.2 kW"}),
        ("t=2024-01-15T10:30:00 x=1", {"t": "2024-01-15T10:30:00", "x": "1"}),
        ("", {}),
    ],
)
def test_keyvalue_pairs(text: str, pairs: dict[str, str]) -> None:
    assert parse_keyvalue(text) == pairs


def test_keyvalue_payload_to_signals() -> None:
    sub = {
        **KV,
        "timestamp": {"path": "T", "format": "epoch_ms"},
        "fields": [
            {"path": "V1", "signal": "voltage_l1"},
            {"path": "V2", "signal": "voltage_l2"},
            {"path": "P", "signal": "power_active", "unit": "kW"},
            {"path": "I", "signal": "current_l1"},
            {"path": "missing", "signal": "voltage_l3"},
        ],
    }
    samples = _decode(sub, "T=1718000000123 V1=230.5 V2=231.0 P=1.2 I=520 mA")
    stored = _stored(samples)
    assert [(s.signal, s.value, s.unit) for s in stored] == [
        ("voltage_l1", 230.5, "V"),
        ("voltage_l2", 231.0, "V"),
        ("power_active", 1200.0, "W"),
        ("current_l1", pytest.approx(0.52), "A"),
    ]
    assert {s.ts_ns for s in stored} == {1_718_000_000_123 * 10**6}


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("garbage", "'garbage' is not a key=value pair"),
        ("V1=1 V1=2", "key 'V1' appears twice"),
        ("X=1", "none of the mapped keys (V1) is in the payload"),
        ("V1=high", "key 'V1': 'high' is not a number for signal 'voltage_l1'"),
    ],
)
def test_keyvalue_refused_with_reason(payload: str, reason: str) -> None:
    sub = {**KV, "fields": [{"path": "V1", "signal": "voltage_l1"}]}
    with pytest.raises(PayloadError, match=_re(reason)):
        _decode(sub, payload)


# --------------------------------------------------------------------------- local times
# Tasmota's tele/<topic>/SENSOR of a plug with energy monitoring, as it publishes it: the
# device's local time with no zone, energy in kWh, power in W.
TASMOTA_SENSOR = (
    b'{"Time":"2024-01-15T10:30:00","ENERGY":{"TotalStartTime":"2023-11-02T18:04:12",'
    b'"Total":12.345,"Yesterday":0.412,"Today":0.128,"Period":2,"Power":120,'
    b'"ApparentPower":126,"ReactivePower":39,"Factor":0.95,"Voltage":230,"Current":0.52}}'
)
TASMOTA: dict[str, Any] = {
    "topic": "tele/{machine}/SENSOR",
    "timestamp": {"path": "Time", "format": "iso8601", "timezone": "Europe/Paris"},
    "fields": [
        {"path": "ENERGY.Total", "signal": "energy_active", "unit": "kWh"},
        {"path": "ENERGY.Power", "signal": "power_active", "unit": "W"},
        {"path": "ENERGY.Voltage", "signal": "voltage_l1", "unit": "V"},
        {"path": "ENERGY.Current", "signal": "current_l1", "unit": "A"},
        {"path": "ENERGY.Factor", "signal": "power_factor"},
        {"path": "ENERGY.ApparentPower", "signal": "x_power_apparent", "unit": "VA"},
    ],
}


def test_tasmota_sensor_payload_with_local_time() -> None:
    samples = _decode(TASMOTA, TASMOTA_SENSOR, "tele/plug-press/SENSOR")
    stored = _stored(samples)
    ts = _utc_ns("2024-01-15T09:30:00+00:00")
    assert [(s.machine, s.signal, s.value, s.unit, s.ts_ns) for s in stored] == [
        ("plug-press", "energy_active", pytest.approx(12345.0), "Wh", ts),
        ("plug-press", "power_active", 120.0, "W", ts),
        ("plug-press", "voltage_l1", 230.0, "V", ts),
        ("plug-press", "current_l1", 0.52, "A", ts),
        ("plug-press", "power_factor", 0.95, "", ts),
        ("plug-press", "x_power_apparent", 126.0, "VA", ts),
    ]


@pytest.mark.parametrize(
    ("local", "utc"),
    [
        ("2024-07-01T12:00:00", "2024-07-01T10:00:00+00:00"),  # CEST, UTC+2
        ("2024-03-31T01:59:59", "2024-03-31T00:59:59+00:00"),  # just before spring forward
        ("2024-03-31T03:00:00", "2024-03-31T01:00:00+00:00"),  # just after
        # 02:30 happens twice on 27 October: the first (still CEST) one is taken
        ("2024-10-27T02:30:00", "2024-10-27T00:30:00+00:00"),
        ("2024-10-27T03:30:00", "2024-10-27T02:30:00+00:00"),
        ("2024-01-15T10:30:00+05:00", "2024-01-15T05:30:00+00:00"),  # a zone wins
    ],
)
def test_local_times_across_dst(local: str, utc: str) -> None:
    payload = TASMOTA_SENSOR.replace(b"2024-01-15T10:30:00", local.encode())
    samples = _decode(TASMOTA, payload, "tele/plug/SENSOR")
    assert {s.ts_ns for s in samples} == {_utc_ns(utc)}


def test_time_in_the_spring_forward_gap_is_refused() -> None:
    payload = TASMOTA_SENSOR.replace(b"2024-01-15T10:30:00", b"2024-03-31T02:30:00")
    with pytest.raises(PayloadError, match="'2024-03-31T02:30:00' does not exist in Europe/Paris"):
        _decode(TASMOTA, payload, "tele/plug/SENSOR")


def test_zone_less_time_without_timezone_says_what_to_set() -> None:
    sub = {**TASMOTA, "timestamp": {"path": "Time", "format": "iso8601"}}
    with pytest.raises(PayloadError, match=r"no time zone in .*set timestamp\.timezone"):
        _decode(sub, TASMOTA_SENSOR, "tele/plug/SENSOR")


# --------------------------------------------------------------------------- json, types
def test_json_value_map_and_booleans() -> None:
    sub = {
        "topic": "stat/{machine}/RESULT",
        "fields": [
            {"path": "POWER", "signal": "online", "value_map": {"ON": 1, "OFF": 0}},
            {"path": "relay", "signal": "x_relay"},
            {"path": "busy", "signal": "power_active"},
        ],
    }
    samples = _decode(sub, b'{"POWER": "ON", "relay": true, "busy": true}', "stat/m1/RESULT")
    assert [(s.signal, s.value) for s in samples] == [
        ("online", 1.0),
        ("x_relay", True),
        ("power_active", True),
    ]
    normalise = Normaliser(PipelineSettings())
    assert normalise(samples[0], NOW_NS).value == 1.0
    assert normalise(samples[1], NOW_NS).value == 1.0  # an integrator's own signal: 0/1
    with pytest.raises(
        PayloadError, match="boolean on numeric signal power_active: map it with value_map"
    ):
        normalise(samples[2], NOW_NS)
    with pytest.raises(PayloadError, match=r"field 'POWER': 'TOGGLE' is not in value_map"):
        _decode(sub, b'{"POWER": "TOGGLE"}', "stat/m1/RESULT")


def test_unknown_unit_from_json_payload_is_refused_per_sample() -> None:
    sub = {"topic": "t/{machine}/{signal}", "value": {"path": "value", "unit_path": "unit"}}
    [sample] = _decode(sub, b'{"value": 5, "unit": "furlongs"}', "t/m1/x_distance")
    with pytest.raises(PayloadError, match=r"x_distance.*unknown unit 'furlongs'"):
        _stored([sample])
    [sample] = _decode(sub, b'{"value": 5, "unit": "mm"}', "t/m1/x_distance")
    assert _stored([sample])[0].unit == "mm"


# --------------------------------------------------------------------------- availability
@pytest.mark.parametrize(
    ("spec", "payload", "online"),
    [
        ({}, b"Online", True),  # Tasmota's LWT
        ({}, b"Offline", False),
        ({}, b"online", True),  # Home Assistant's convention
        ({"online": "1", "offline": "0"}, b"0", False),
        ({"path": "status"}, b'{"status": "offline", "ts": 0}', False),
        ({"path": "alive", "online": True, "offline": False}, b'{"alive": true}', True),
    ],
)
def test_availability_words(spec: dict[str, Any], payload: bytes, online: bool) -> None:
    sub = Subscription.model_validate({"topic": "tele/{machine}/LWT", "availability": spec})
    assert sub.availability is not None
    assert availability(sub.availability, payload) is online


def test_availability_unknown_word_is_refused() -> None:
    sub = Subscription.model_validate({"topic": "tele/{machine}/LWT", "availability": {}})
    assert sub.availability is not None
    with pytest.raises(PayloadError, match="'Rebooting' is neither online"):
        availability(sub.availability, b"Rebooting")


# --------------------------------------------------------------------------- config errors
@pytest.mark.parametrize(
    ("sub", "message"),
    [
        ({**TEXT, "signal": "voltage_l1", "value": {"path": "v"}}, "value.path must be null"),
        ({**TEXT, "signal": "voltage_l1", "value": {"unit_path": "u"}}, "remove value.unit_path"),
        ({**TEXT, "fields": [{"path": "a", "signal": "state"}]}, "format text takes 'value'"),
        (
            {**TEXT, "signal": "state", "value": {"value_map": {"RUN": "running", "STOP": False}}},
            "quote it",
        ),
        (
            {**TEXT, "signal": "power_active", "value": {"value_map": {"HIGH": "max"}}},
            "give a number",
        ),
        ({**TEXT, "signal": "online", "value": {"value_map": {"ON": 5}}}, "give 1 or 0"),
        (
            {**TEXT, "signal": "voltage_l1", "value": {}, "timestamp": {"path": "t"}},
            "a text payload holds no time",
        ),
        ({**CSV, "columns": [None]}, "columns maps no column"),
        ({**CSV, "columns": ["voltage_l1"], "delimiter": "ab"}, "expected one character"),
        (
            {**CSV, "columns": ["voltage_l1"], "timestamp": {"column": 0}},
            "column 0 is the timestamp column",
        ),
        ({**CSV, "columns": ["power_active"], "timestamp": {"path": "t"}}, "timestamp.column"),
        ({**CSV, "columns": [{"signal": "power_active", "unit": "V"}]}, "cannot convert"),
        ({**CSV, "fields": [{"path": "a", "signal": "state"}]}, "format csv takes 'columns'"),
        ({**KV, "value": {"path": "a"}, "signal": "state"}, "format keyvalue takes 'fields'"),
        (
            {**TASMOTA, "timestamp": {"path": "Time", "timezone": "Europe/Pariss"}},
            "unknown time zone 'Europe/Pariss'",
        ),
        (
            {**TASMOTA, "timestamp": {"timezone": "Europe/Paris"}},
            "applies to a time read from the payload",
        ),
        (
            {"topic": "tele/{machine}/LWT", "availability": {}, "stale_after_s": 30},
            "takes none of stale_after_s",
        ),
        (
            {"topic": "tele/{machine}/LWT", "availability": {}, "fields": TASMOTA["fields"]},
            "remove fields",
        ),
        (
            {"topic": "t/{machine}", "availability": {"online": "up", "offline": ["UP"]}},
            "both online and offline",
        ),
        ({**TASMOTA, "fields": [{"path": "x", "signal": "x_a", "unit": "parsecs"}]}, "unknown"),
    ],
)
def test_config_errors_name_what_is_wrong(sub: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=_re(message)):
        Subscription.model_validate(sub)


def test_yaml_booleans_in_value_map_stand_for_their_words() -> None:
    sub = Subscription.model_validate(
        {**TEXT, "signal": "online", "value": {"value_map": {True: 1, False: 0, "yes": 0}}}
    )
    assert sub.value is not None and sub.value.value_map is not None
    # PyYAML reads ON / OFF unquoted as true / false; an explicit word wins
    assert sub.value.value_map == {
        "true": 1.0,
        "on": 1.0,
        "yes": 0,
        "false": 0.0,
        "off": 0.0,
        "no": 0.0,
    }


def test_adapter_level_stale_after_and_signals_referenced() -> None:
    config = MqttAdapterConfig.model_validate(
        {
            "type": "mqtt",
            "name": "plugs",
            "stale_after_s": 120,
            "subscriptions": [
                {**TASMOTA, "topic": "tele/plug-1/SENSOR", "machine": "press-1"},
                {"topic": "tele/plug-1/LWT", "machine": "press-1", "availability": {}},
                {**CSV, "columns": ["voltage_l1"]},
            ],
        }
    )
    assert config.stale_after_s == 120
    assert ("press-1", "energy_active") in config.signals_referenced()
    assert ("press-1", "online") in config.signals_referenced()
    with pytest.raises(ValidationError, match="stale_after_s"):
        MqttAdapterConfig.model_validate({**config.model_dump(), "stale_after_s": 0})


# --------------------------------------------------------------------------- fuzz
FUZZ_SUBS = [
    {**TEXT, "signal": "voltage_l1", "value": {"value_map": {"ON": 1}}},
    {**TEXT, "signal": "state", "value": {}},
    {**CSV, "timestamp": {"column": 0}, "columns": [None, "voltage_l1", "state"]},
    {**KV, "timestamp": {"path": "t"}, "fields": [{"path": "a", "signal": "voltage_l1"}]},
]


@settings(max_examples=600, deadline=None)
@given(
    index=st.integers(0, len(FUZZ_SUBS) - 1),
    payload=st.text(max_size=60) | st.binary(max_size=60),
)
def test_text_decoders_take_anything_without_crashing(index: int, payload: str | bytes) -> None:
    """Any payload gives samples or a PayloadError with a reason; nothing else escapes."""
    sub = FUZZ_SUBS[index]
    topic = "meter/m1/csv" if sub is FUZZ_SUBS[2] else "t/x"
    try:
        samples = _decode(sub, payload, topic)
    except PayloadError as err:
        assert str(err).strip()
        return
    assert samples
    for sample in samples:
        try:
            [stored] = _stored([sample])
        except PayloadError as err:
            assert str(err).strip()
        else:
            assert stored.unit in KNOWN_UNITS
