"""Pipeline stage: raw adapter output → validated canonical sample, or a reason why not.

Types are held to the vocabulary: text only on text signals, booleans only on boolean
signals (stored 0.0 / 1.0) and integrators' own signals, and units only from the known
registry of :mod:`.units`, so nothing a payload says becomes a raw tag.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from microfactory.contract import SIGNALS

from .config import PipelineSettings
from .errors import PayloadError
from .sample import RawSample, Sample
from .units import UnitError, converter


class Normaliser:
    """Holds the conversion cache; one per gateway."""

    def __init__(self, settings: PipelineSettings) -> None:
        self._settings = settings
        self._conversions: dict[
            tuple[str, str | None], tuple[str, Callable[[float], float] | None]
        ] = {}

    def _convert(
        self, signal: str, unit: str | None, where: str
    ) -> tuple[str, Callable[[float], float] | None]:
        key = (signal, unit)
        found = self._conversions.get(key)
        if found is None:
            try:
                found = converter(signal, unit)
            except UnitError as err:
                raise PayloadError(f"{where}: {err}") from err
            if len(self._conversions) < 10_000:  # units come from payloads: bound the cache
                self._conversions[key] = found
        return found

    def __call__(self, raw: RawSample, now_ns: int) -> Sample:
        where = f"machine {raw.machine!r} signal {raw.signal!r}"
        if not raw.signal:
            raise PayloadError(f"machine {raw.machine!r}: empty signal name")
        spec = SIGNALS.get(raw.signal)
        value = raw.value
        # a bad sample without a value carries the status name as text (BadSensorFailure)
        text_signal = (spec.kind == "text" if spec else isinstance(value, str)) or (
            raw.quality == "bad" and isinstance(value, str)
        )
        if text_signal:
            if not isinstance(value, str):
                raise PayloadError(
                    f"{where}: expected text, got {type(value).__name__} {value!r:.64}"
                )
            if len(value) > self._settings.max_text_length:
                raise PayloadError(
                    f"{where}: text of {len(value)} characters exceeds {self._settings.max_text_length}"
                )
            unit = ""
            out: float | str = value
        else:
            kind = spec.kind if spec else None
            if isinstance(value, bool):
                if kind in ("gauge", "counter"):
                    # a switch state stored as 1.0 W would pass for a measurement
                    raise PayloadError(
                        f"{where}: boolean on numeric signal {raw.signal}: map it with "
                        "value_map (e.g. {true: 1, false: 0})"
                    )
                value = float(value)
            if not isinstance(value, int | float):
                if kind == "boolean":
                    raise PayloadError(
                        f"{where}: boolean signal takes true/false or 0/1, got "
                        f"{type(value).__name__} {value!r:.64}; map it with value_map"
                    )
                raise PayloadError(
                    f"{where}: expected a number, got {type(value).__name__} {value!r:.64}"
                )
            number = float(value) if abs(value) < 1e308 else math.inf
            if not math.isfinite(number):
                raise PayloadError(f"{where}: value is not finite ({value!r:.64})")
            if kind == "boolean" and number not in (0.0, 1.0):
                raise PayloadError(
                    f"{where}: boolean signal takes true/false or 0/1, got {value!r:.64}"
                )
            unit, conv = self._convert(raw.signal, raw.unit, where)
            out = conv(number) if conv else number
        ts = raw.ts_ns if raw.ts_ns is not None else now_ns
        if ts < self._settings.min_timestamp_ns:
            raise PayloadError(
                f"{where}: timestamp {ts} ns is before {self._settings.min_timestamp_ns}"
            )
        if ts > now_ns + int(self._settings.max_future_s * 1e9):
            raise PayloadError(
                f"{where}: timestamp {ts} ns is more than {self._settings.max_future_s:.0f} s in the future"
            )
        return Sample(raw.machine, raw.signal, out, unit, ts, raw.quality)
