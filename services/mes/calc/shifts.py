"""Shift windows in the site's local time, turned into UTC intervals for OEE per shift."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo


@dataclass(frozen=True, slots=True)
class ShiftWindow:
    name: str
    day: date
    start: datetime
    end: datetime


def _hm(text: str) -> time:
    hour, minute = text.split(":")
    return time(int(hour), int(minute))


def shift_windows(
    start: datetime, end: datetime, shifts: list[tuple[str, str, str]], tz: tzinfo
) -> list[ShiftWindow]:
    """Every shift (name, "HH:MM", "HH:MM") overlapping [start, end), clipped to it."""
    out: list[ShiftWindow] = []
    day = start.astimezone(tz).date() - timedelta(days=1)
    last = end.astimezone(tz).date()
    while day <= last:
        for name, s, e in shifts:
            s_dt = datetime.combine(day, _hm(s), tz)
            e_dt = datetime.combine(day, _hm(e), tz)
            if e_dt <= s_dt:
                e_dt += timedelta(days=1)
            lo, hi = max(s_dt, start), min(e_dt, end)
            if hi > lo:
                out.append(ShiftWindow(name, day, lo.astimezone(UTC), hi.astimezone(UTC)))
        day += timedelta(days=1)
    return sorted(out, key=lambda w: w.start)
