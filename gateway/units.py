"""Unit normalisation: every source's unit converted to the vocabulary's canonical unit."""

from __future__ import annotations

from collections.abc import Callable

from microfactory.contract import SIGNALS

# Aliases people write in configs and payloads, folded onto one spelling.
_ALIASES: dict[str, str] = {
    "w": "W",
    "watt": "W",
    "watts": "W",
    "kw": "kW",
    "mw": "MW",
    "wh": "Wh",
    "kwh": "kWh",
    "mwh": "MWh",
    "°c": "degC",
    "c": "degC",
    "degc": "degC",
    "celsius": "degC",
    "°f": "degF",
    "f": "degF",
    "degf": "degF",
    "k": "K",
    "kelvin": "K",
    "rpm": "rpm",
    "1/min": "rpm",
    "mm/min": "mm/min",
    "mm/s": "mm/s",
    "m/min": "m/min",
    "nm": "N*m",
    "n*m": "N*m",
    "n.m": "N*m",
    "newton-metre": "N*m",
    "v": "V",
    "kv": "kV",
    "count": "count",
    "pcs": "count",
    "parts": "count",
    "": "",
}

_Conv = Callable[[float], float]


def _scale(k: float) -> _Conv:
    return lambda v: v * k


_CONVERSIONS: dict[tuple[str, str], _Conv] = {
    ("kW", "W"): _scale(1e3),
    ("MW", "W"): _scale(1e6),
    ("kWh", "Wh"): _scale(1e3),
    ("MWh", "Wh"): _scale(1e6),
    ("degF", "degC"): lambda v: (v - 32.0) * 5.0 / 9.0,
    ("K", "degC"): lambda v: v - 273.15,
    ("mm/s", "mm/min"): _scale(60.0),
    ("m/min", "mm/min"): _scale(1e3),
    ("kV", "V"): _scale(1e3),
}


class UnitError(ValueError):
    """A unit cannot be converted to the signal's canonical unit."""


def check_unit(signal: str, unit: str | None) -> str | None:
    """Validator helper for configs: a unit fixed in a config must convert to the signal's.

    Raised at config time so a wrong unit is found by ``config check``, not by the first
    message of the night shift.
    """
    if unit is not None:
        converter(signal, unit)
    return unit


def canonical_unit(unit: str) -> str:
    """Fold spelling variants (``kwh``, ``°C``) onto the vocabulary's spelling."""
    return _ALIASES.get(unit.strip().lower(), unit.strip())


def converter(signal: str, unit: str | None) -> tuple[str, _Conv | None]:
    """Return (canonical unit, conversion or None when the value is already canonical).

    Signals outside the vocabulary keep the unit they came with: integrators may add their
    own signals, they just don't get conversion.
    """
    spec = SIGNALS.get(signal)
    given = canonical_unit(unit) if unit is not None else None
    if spec is None:
        return (given or ""), None
    if given is None or given == spec.unit or spec.kind == "text":
        return spec.unit, None
    conv = _CONVERSIONS.get((given, spec.unit))
    if conv is None:
        raise UnitError(
            f"signal {signal!r} is measured in {spec.unit!r}; cannot convert from {unit!r}"
        )
    return spec.unit, conv
