"""Conversions between the wire's UTC nanoseconds and the database's aware datetimes."""

from __future__ import annotations

from datetime import UTC, datetime

from microfactory.mes.calc.intervals import NS


def from_ns(ts_ns: int) -> datetime:
    seconds, rest = divmod(ts_ns, NS)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=rest // 1000)


def to_ns(ts: datetime) -> int:
    """Exact (integer) ns of an aware datetime; float timestamps would lose microseconds."""
    delta = ts.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * NS + delta.microseconds * 1000


def now() -> datetime:
    return datetime.now(UTC)
