"""What to call a node, and in which unit: proposals from browse names and EngineeringUnits.

A browse only sees names a vendor chose (``SpindleSpeed``, ``PartsBad``, ``PartCounter``) and,
when the server has them, EUInformation properties. These rules say when the meaning is plain
enough to propose a vocabulary signal (checked against the unit: a vocabulary signal whose
canonical unit the node's unit cannot convert to is not proposed) and otherwise make a
signal name of the browse name. They change when the vocabulary or the unit table does, not
when the walk or the YAML layout does; all of them are pure.
"""

from __future__ import annotations

import re
from typing import Any

from asyncua import ua

from microfactory.contract import SIGNALS

from ...units import UnitError, canonical_unit, check_unit
from .datatypes import TEXT_TYPES

# UNECE Recommendation 20 common codes (EUInformation.UnitId) -> the unit strings the config
# uses (gateway/units.py spells them; a vocabulary signal converts from these).
UNECE_UNITS: dict[str, str] = {
    "WTT": "W",
    "KWT": "kW",
    "MAW": "MW",
    "WHR": "Wh",
    "KWH": "kWh",
    "MWH": "MWh",
    "VLT": "V",
    "KVT": "kV",
    "AMP": "A",
    "CEL": "degC",
    "FAH": "degF",
    "KEL": "K",
    "RPM": "rpm",
    "HTZ": "Hz",
    "KHZ": "kHz",
    "H81": "mm/min",
    "C16": "mm/s",
    "2X": "m/min",
    "MTS": "m/s",
    "NU": "N*m",
    "NEW": "N",
    "P1": "%",
    "BAR": "bar",
    "MBR": "mbar",
    "PAL": "Pa",
    "KPA": "kPa",
    "MPA": "MPa",
    "SEC": "s",
    "C26": "ms",
    "MIN": "min",
    "HUR": "h",
    "MMT": "mm",
    "MTR": "m",
    "KGM": "kg",
    "GRM": "g",
    "C62": "count",
    "H87": "count",
    "EA": "count",
}
# Display names servers write instead of (or besides) a UnitId, folded by canonical_unit.
_DISPLAY_UNITS = set(UNECE_UNITS.values()) | {"rpm"}
_DISPLAY_ALIASES = {"r/min": "rpm", "u/min": "rpm", "1/min": "rpm", "pcs": "count", "stk": "count"}


def unit_id_code(unit_id: int) -> str:
    """The UNECE common code packed in an EUInformation.UnitId (``4937544`` → ``KWT``)."""
    chars = [(unit_id >> shift) & 0xFF for shift in (24, 16, 8, 0)]
    return "".join(chr(c) for c in chars if c)


def config_unit(eu: Any) -> tuple[str | None, str | None]:
    """(unit in the config's spelling, or None; text naming an unmapped unit, or None)."""
    if not isinstance(eu, ua.EUInformation):
        return None, None
    if eu.UnitId not in (None, -1, 0):
        code = unit_id_code(int(eu.UnitId))
        if code in UNECE_UNITS:
            return UNECE_UNITS[code], None
    text = (eu.DisplayName.Text if eu.DisplayName else None) or ""
    folded = _DISPLAY_ALIASES.get(text.strip().lower(), canonical_unit(text))
    if folded in _DISPLAY_UNITS:
        return folded, None
    described = (eu.Description.Text if eu.Description else None) or ""
    shown = " ".join(p for p in (text, f"({described})" if described else "") if p)
    if eu.UnitId not in (None, -1, 0):
        shown = f"{shown} UNECE {unit_id_code(int(eu.UnitId))}".strip()
    return None, shown or None


# --------------------------------------------------------------------------- signal names
def slug(name: str) -> str:
    """``SpindleSpeed`` → ``spindle_speed``: a browse name as a signal name."""
    text = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    text = re.sub(r"([0-9])([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", text)
    text = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()
    if not text:
        return "value"
    return text if text[0].isalpha() else f"v_{text}"


_POWER_UNITS = {"W", "kW", "MW"}
_ENERGY_UNITS = {"Wh", "kWh", "MWh"}
_TEMPERATURE_UNITS = {"degC", "degF", "K"}
_TEMPERATURE_PLACES = ("spindle", "coolant", "resonator", "chiller", "nozzle", "bed")


def _phase(key: str) -> str | None:
    m = re.search(r"(?:l|phase)([123])$", key)
    return m.group(1) if m else None


def propose_signal(
    browse_name: str, unit: str | None, base_type: str = "", *, enum: bool = False
) -> str:
    """A signal for this node: the vocabulary's when the name or unit make it plain, else a slug.

    The proposal is checked against the unit: a vocabulary signal whose canonical unit the
    node's unit does not convert to is not proposed (``Power`` in ``A`` stays ``power``).
    Integer codes that are no enumeration are not proposed as ``state``: without a value map
    (which only the machine's manual can give) the adapter could not store them as words.
    """
    key = re.sub(r"[^a-z0-9]", "", browse_name.lower())
    text = base_type in TEXT_TYPES or base_type == "Enumeration" or enum
    guess: str | None = None
    if "temp" in key and (unit is None or unit in _TEMPERATURE_UNITS):
        place = next((p for p in _TEMPERATURE_PLACES if p in key), None)
        guess = f"temperature_{place}" if place else "temperature"
    elif "laserpower" in key:
        guess = "laser_power"
    elif "energy" in key and "reactive" not in key and "apparent" not in key:
        guess = "energy_active" if unit is None or unit in _ENERGY_UNITS else None
    elif "power" in key and not any(w in key for w in ("reactive", "apparent", "factor")):
        if unit is None or unit in _POWER_UNITS:
            phase = _phase(key)
            guess = f"power_l{phase}" if phase else "power_active"
    elif "volt" in key and (phase := _phase(key)) and (unit is None or unit in {"V", "kV"}):
        guess = f"voltage_l{phase}"
    elif ("good" in key and ("part" in key or "count" in key)) or key in {"good", "goodparts"}:
        guess = "good_count"
    elif any(w in key for w in ("scrap", "reject")) or (
        "bad" in key and ("part" in key or "count" in key)
    ):
        guess = "scrap_count"
    elif key.startswith("part") or key in {"parts", "piececount", "pieces"}:
        guess = "part_count"
    elif key.startswith(("state", "status", "machinestate", "operatingstate")) and (
        text or not base_type
    ):
        guess = "state"
    elif "program" in key and (text or not base_type):
        guess = "program"
    elif "spindle" in key and ("speed" in key or unit == "rpm"):
        guess = "spindle_speed"
    elif "feed" in key and ("rate" in key or unit in {"mm/min", "mm/s", "m/min"}):
        guess = "feed_rate"
    elif "torque" in key:
        guess = "torque"
    if guess is not None and guess in SIGNALS:
        try:
            check_unit(guess, unit)
        except UnitError:
            guess = None
    return guess or slug(browse_name)
