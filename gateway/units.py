"""Unit normalisation: every source's unit converted to the vocabulary's canonical unit.

Units also become the ``unit`` tag of every stored sample, so only units of a small known
registry are ever accepted: a unit read from a payload (``unit_path``, a text payload such
as ``230.5 V``) could otherwise carry control characters or grow the tag's cardinality
without bound. A unit outside the registry sends its sample to the dead letters.
"""

from __future__ import annotations

from collections.abc import Callable

from microfactory.contract import SIGNALS

MAX_UNIT_LENGTH = 16

# Every unit the gateway accepts, in its one canonical spelling: the vocabulary's units,
# what they convert from, and the common units of integrators' own signals.
KNOWN_UNITS: frozenset[str] = frozenset(
    {
        "",
        "count",
        # power, energy
        "W",
        "kW",
        "MW",
        "Wh",
        "kWh",
        "MWh",
        "var",
        "kvar",
        "VA",
        "kVA",
        "varh",
        "kvarh",
        "VAh",
        "kVAh",
        # electrical
        "V",
        "kV",
        "mV",
        "A",
        "mA",
        "kA",
        "Hz",
        "kHz",
        "%",
        "ohm",
        # temperature
        "degC",
        "degF",
        "K",
        # motion, mechanics
        "rpm",
        "mm/min",
        "mm/s",
        "m/min",
        "m/s",
        "m/s2",
        "g0",
        "N*m",
        "N",
        "kN",
        # pressure, flow, volume, mass
        "bar",
        "mbar",
        "Pa",
        "kPa",
        "MPa",
        "psi",
        "l/min",
        "l/h",
        "m3/h",
        "l",
        "m3",
        "kg",
        "g",
        "t",
        # time, length
        "s",
        "ms",
        "min",
        "h",
        "um",
        "mm",
        "cm",
        "m",
        # air, light, sound
        "ppm",
        "lx",
        "dB",
    }
)

# Spellings people write in configs and payloads (lower case), folded onto one spelling.
_ALIASES: dict[str, str] = {
    "w": "W",
    "watt": "W",
    "watts": "W",
    "kw": "kW",
    "mw": "MW",
    "wh": "Wh",
    "kwh": "kWh",
    "mwh": "MWh",
    "var": "var",
    "kvar": "kvar",
    "va": "VA",
    "kva": "kVA",
    "varh": "varh",
    "kvarh": "kvarh",
    "vah": "VAh",
    "kvah": "kVAh",
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
    "m/s": "m/s",
    "nm": "N*m",
    "n*m": "N*m",
    "n.m": "N*m",
    "newton-metre": "N*m",
    "v": "V",
    "volt": "V",
    "volts": "V",
    "kv": "kV",
    "mv": "mV",
    "a": "A",
    "amp": "A",
    "amps": "A",
    "ampere": "A",
    "ma": "mA",
    "ka": "kA",
    "hz": "Hz",
    "khz": "kHz",
    "percent": "%",
    "ω": "ohm",  # Ω, folded to lower case
    "bar": "bar",
    "mbar": "mbar",
    "pa": "Pa",
    "kpa": "kPa",
    "mpa": "MPa",
    "psi": "psi",
    "l/min": "l/min",
    "lpm": "l/min",
    "l/h": "l/h",
    "m3/h": "m3/h",
    "m³/h": "m3/h",
    "m³": "m3",
    "kg": "kg",
    "g": "g",
    "sec": "s",
    "µm": "um",
    "lux": "lx",
    "db": "dB",
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
    ("mV", "V"): _scale(1e-3),
    ("mA", "A"): _scale(1e-3),
    ("kA", "A"): _scale(1e3),
    ("kHz", "Hz"): _scale(1e3),
    ("%", ""): _scale(1e-2),  # a power factor given in percent
}


class UnitError(ValueError):
    """A unit is unknown, or cannot be converted to the signal's canonical unit."""


def check_unit(signal: str, unit: str | None) -> str | None:
    """Validator helper for configs: a unit fixed in a config must convert to the signal's.

    Raised at config time so a wrong unit is found by ``config check``, not by the first
    message of the night shift.
    """
    if unit is not None:
        converter(signal, unit)
    return unit


def canonical_unit(unit: str) -> str:
    """Fold spelling variants (``kwh``, ``°C``) onto the registry's spelling.

    An exact canonical spelling wins over the folded one (``mA`` stays milliampere); a unit
    the registry does not know comes back stripped, as it was.
    """
    text = unit.strip()
    if text in KNOWN_UNITS:
        return text
    return _ALIASES.get(text.lower(), text)


def known_unit(unit: object) -> str:
    """The canonical spelling of a unit read from a payload; UnitError says why it is refused."""
    if not isinstance(unit, str):
        raise UnitError(f"unit must be text, got {type(unit).__name__} {unit!r:.40}")
    if len(unit) > MAX_UNIT_LENGTH:
        raise UnitError(f"unit {unit[:40]!r} is longer than {MAX_UNIT_LENGTH} characters")
    if any(not ch.isprintable() for ch in unit):
        raise UnitError(f"unit {unit!r} has control characters")
    folded = canonical_unit(unit)
    if folded not in KNOWN_UNITS:
        raise UnitError(
            f"unknown unit {unit!r} (the gateway takes the units listed under Units in "
            "docs/site-config.md, e.g. W, kWh, V, A, Hz, %, degC, bar, l/min)"
        )
    return folded


def converter(signal: str, unit: str | None) -> tuple[str, _Conv | None]:
    """Return (canonical unit, conversion or None when the value is already canonical).

    Signals outside the vocabulary keep the unit they came with, once it is a known unit:
    integrators may add their own signals, they just don't get conversion.
    """
    spec = SIGNALS.get(signal)
    if spec is not None and spec.kind == "text":
        return "", None  # text has no unit: whatever came with it is dropped, never stored
    given = known_unit(unit) if unit is not None else None
    if spec is None:
        return (given or ""), None
    if given is None or given == spec.unit:
        return spec.unit, None
    conv = _CONVERSIONS.get((given, spec.unit))
    if conv is None:
        raise UnitError(
            f"signal {signal!r} is measured in {spec.unit!r}; cannot convert from {unit!r}"
        )
    return spec.unit, conv
