"""Turning an HTTP answer from an InfluxDB-like server into a SinkError."""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from ...errors import SinkError


def retry_after_s(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from datetime import UTC, datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def classify(status: int, body: str, retry_after: str | None, what: str) -> SinkError:
    """429 / 5xx are the server's trouble (retry); other 4xx mean the points are bad."""
    text = f"{what}: HTTP {status}: {body.strip()[:300]}"
    if status == 429 or status >= 500:
        return SinkError(text, retryable=True, retry_after_s=retry_after_s(retry_after))
    if status in (401, 403, 404):
        # Wrong credentials or database: nothing wrong with the points, an operator must act.
        return SinkError(text, retryable=True)
    return SinkError(text, retryable=False)
