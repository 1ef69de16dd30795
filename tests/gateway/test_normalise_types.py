"""Types held to the vocabulary: booleans only where a boolean belongs, stored as 0.0 / 1.0.

A switch's ``true`` stored as ``1.0 W`` on a power signal would pass for a measurement in
every energy figure; the normaliser refuses it and says how to map it instead.
"""

from __future__ import annotations

import pytest

from microfactory.gateway.config import PipelineSettings
from microfactory.gateway.errors import PayloadError
from microfactory.gateway.normalise import Normaliser
from microfactory.gateway.sample import RawSample

NOW = 1_800_000_000_000_000_000


def _norm(signal: str, value: object, unit: str | None = None) -> tuple[object, str]:
    sample = Normaliser(PipelineSettings())(RawSample("m1", signal, value, unit, NOW), NOW)
    return sample.value, sample.unit


@pytest.mark.parametrize(
    ("signal", "value", "stored"),
    [
        ("online", True, 1.0),
        ("online", False, 0.0),
        ("online", 1, 1.0),
        ("online", 0.0, 0.0),
        ("x_door_open", True, 1.0),  # an integrator's own signal: 0/1
        ("x_door_open", False, 0.0),
        ("power_active", 12, 12.0),
    ],
)
def test_booleans_where_they_belong(signal: str, value: object, stored: float) -> None:
    got, _ = _norm(signal, value)
    assert got == stored and type(got) is float


@pytest.mark.parametrize(
    ("signal", "value", "reason"),
    [
        ("power_active", True, "boolean on numeric signal power_active: map it with value_map"),
        ("energy_active", False, "boolean on numeric signal energy_active"),
        ("part_count", True, "boolean on numeric signal part_count"),
        ("state", True, "expected text, got bool True"),
        ("online", 2, "boolean signal takes true/false or 0/1, got 2"),
        ("online", "yes", "boolean signal takes true/false or 0/1, got str 'yes'"),
        ("online", float("nan"), "value is not finite"),
    ],
)
def test_booleans_refused_elsewhere_with_reason(signal: str, value: object, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        _norm(signal, value)


def test_boolean_signal_takes_no_unit() -> None:
    assert _norm("online", True, "") == (1.0, "")
    with pytest.raises(PayloadError, match="cannot convert from 'W'"):
        _norm("online", True, "W")
