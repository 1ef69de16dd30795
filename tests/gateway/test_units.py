"""Units: every alias folds onto the vocabulary, every conversion is the physical one."""

from __future__ import annotations

from typing import Any

import pytest

from microfactory.contract import SIGNALS
from microfactory.gateway.config import PipelineSettings
from microfactory.gateway.errors import PayloadError
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.sample import RawSample, Sample
from microfactory.gateway.units import UnitError, canonical_unit, converter

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
