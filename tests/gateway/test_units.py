"""Units: every alias folds onto the vocabulary, every conversion is the physical one."""

from __future__ import annotations

from typing import Any

import pytest

from microfactory.contract import SIGNALS
from microfactory.gateway.config import PipelineSettings
from microfactory.gateway.errors import PayloadError
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.sample import RawSample, Sample
from microfactory.gateway.units import (
    KNOWN_UNITS,
    UnitError,
    canonical_unit,
    check_unit,
    converter,
    known_unit,
)

NOW = 1_800_000_000_000_000_000


@pytest.mark.parametrize(
    ("signal", "unit", "value", "expected"),
    [
        ("power_active", "kW", 1.5, 1500.0),
        ("power_active", "W", 1.5, 1.5),
        ("power_active", "watts", 7.0, 7.0),
        ("energy_active", "kWh", 12.345, 12345.0),
        ("energy_active", "MWh", 0.002, 2000.0),
        ("temperature_spindle", "°F", 212.0, 100.0),
        ("temperature_spindle", "K", 273.15, 0.0),
        ("temperature_spindle", "°C", 21.5, 21.5),
        ("feed_rate", "mm/s", 10.0, 600.0),
        ("voltage_l1", "kV", 0.4, 400.0),
    ],
)
def test_conversion(signal: str, unit: str, value: float, expected: float) -> None:
    canonical, conv = converter(signal, unit)
    assert canonical == SIGNALS[signal].unit
    got = conv(value) if conv else value
    assert got == pytest.approx(expected, abs=1e-9)


def test_unknown_unit_for_known_signal_is_refused() -> None:
    with pytest.raises(
        UnitError, match="'power_active' is measured in 'W'; cannot convert from 'V'"
    ):
        converter("power_active", "V")


def test_custom_signal_keeps_its_unit() -> None:
    assert converter("x_vibration", "mm/s") == ("mm/s", None)
    assert canonical_unit(" KWH ") == "kWh"


def _norm(**kw: Any) -> Sample:
    fields: dict[str, Any] = {"machine": "mill-1", "signal": "power_active", "value": 1.0}
    fields["ts_ns"] = NOW
    fields.update(kw)
    return Normaliser(PipelineSettings())(RawSample(**fields), NOW)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"value": "12"},
            "machine 'mill-1' signal 'power_active': expected a number, got str '12'",
        ),
        ({"value": float("nan")}, "value is not finite (nan)"),
        ({"value": float("inf")}, "value is not finite (inf)"),
        ({"value": 10**400}, "value is not finite"),
        ({"value": None}, "expected a number, got NoneType None"),
        ({"value": [1]}, "expected a number, got list [1]"),
        ({"signal": "program", "value": 5}, "expected text, got int 5"),
        ({"signal": ""}, "empty signal name"),
        ({"ts_ns": 5}, "timestamp 5 ns is before"),
        ({"ts_ns": NOW + 30 * 86400 * 10**9}, "s in the future"),
        ({"unit": "degC"}, "cannot convert from 'degC'"),
    ],
)
def test_bad_values_are_refused_with_reason(kw: dict[str, object], message: str) -> None:
    with pytest.raises(PayloadError) as caught:
        _norm(**kw)
    assert message in str(caught.value)


def test_good_value_normalised() -> None:
    sample = _norm(value=2, unit="kW")
    assert (sample.value, sample.unit, sample.ts_ns) == (2000.0, "W", NOW)
    assert _norm(signal="x_door_open", value=True).value == 1.0


@pytest.mark.parametrize(
    ("signal", "unit", "value", "expected"),
    [
        ("current_l1", "mA", 520.0, 0.52),
        ("current_l2", "A", 3.0, 3.0),
        ("current_l3", "kA", 0.002, 2.0),
        ("frequency", "kHz", 0.05, 50.0),
        ("frequency", "hz", 50.0, 50.0),
        ("power_factor", "%", 95.0, 0.95),
        ("voltage_l1", "mV", 230_000.0, 230.0),
    ],
)
def test_conversions_of_the_meter_signals(
    signal: str, unit: str, value: float, expected: float
) -> None:
    canonical, conv = converter(signal, unit)
    assert canonical == SIGNALS[signal].unit
    assert (conv(value) if conv else value) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("given", "canonical"),
    [
        ("mA", "mA"),
        ("MA", "mA"),
        ("kva", "kVA"),
        ("KVAR", "kvar"),
        ("m³/h", "m3/h"),
        ("Ω", "ohm"),
        ("lpm", "l/min"),
        (" bar ", "bar"),
        ("MPa", "MPa"),
        ("%", "%"),
    ],
)
def test_known_units_fold_onto_one_spelling(given: str, canonical: str) -> None:
    assert known_unit(given) == canonical
    assert canonical in KNOWN_UNITS


def test_every_vocabulary_unit_and_conversion_source_is_known() -> None:
    for spec in SIGNALS.values():
        assert spec.unit in KNOWN_UNITS, spec


@pytest.mark.parametrize(
    ("unit", "reason"),
    [
        ("furlongs", "unknown unit 'furlongs'"),
        ("W\x00", "control characters"),
        ("k\nW", "control characters"),
        ("W" * 17, "longer than 16 characters"),
        (5, "unit must be text, got int 5"),
    ],
)
def test_units_outside_the_registry_are_refused(unit: object, reason: str) -> None:
    with pytest.raises(UnitError, match=reason):
        known_unit(unit)


def test_unknown_unit_refused_for_an_integrators_signal_too() -> None:
    """A unit becomes a tag: an integrator's signal keeps a known unit, never a raw one."""
    with pytest.raises(UnitError, match="unknown unit 'wibbles'"):
        check_unit("x_spin", "wibbles")
    assert converter("x_pressure", "BAR") == ("bar", None)
    with pytest.raises(PayloadError, match="machine 'mill-1' signal 'x_spin': unknown unit"):
        _norm(signal="x_spin", unit="wibbles")


def test_text_signal_drops_any_unit() -> None:
    assert _norm(signal="state", value="idle", unit="\x1b[31m").unit == ""
