"""The adapter SDK: everything an adapter imports, from one module, under one API version.

An adapter package (built-in or an integrator's) imports from here and nowhere else in the
gateway; what is not listed in ``__all__`` may change without notice. See
docs/writing-an-adapter.md for the walk-through and the conformance kit
(:mod:`microfactory.gateway.testing`) for the checks an adapter must pass.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from microfactory.contract import SIGNALS

from .adapters.base import (
    API_VERSION,
    Adapter,
    AdapterConfigBase,
    AdapterContext,
    AdapterFactory,
    AdapterPlugin,
    ConnectionState,
    DeviceState,
    Emitter,
)
from .devices import DeviceWatch
from .errors import NeedsAttention, PayloadError
from .sample import Quality, RawSample
from .supervisor import Backoff, Connection, ConnectionSupervisor, describe_error
from .units import check_unit

__all__ = [
    "API_VERSION",
    "MISSING",
    "Adapter",
    "AdapterConfigBase",
    "AdapterContext",
    "AdapterFactory",
    "AdapterPlugin",
    "Backoff",
    "Connection",
    "ConnectionState",
    "ConnectionSupervisor",
    "DeviceState",
    "DeviceWatch",
    "Emitter",
    "NeedsAttention",
    "PayloadError",
    "Quality",
    "RawSample",
    "check_unit",
    "datetime_to_ns",
    "describe_error",
    "json_path",
    "scaled",
    "signal_kind",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MISSING: Any = object()
"""What :func:`json_path` returns for a path the document does not have (None is a value)."""


def json_path(doc: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a decoded JSON document, or :data:`MISSING`.

    Keys walk objects, decimal keys index arrays (``phases.0.voltage``); a path that leaves
    the document is MISSING, never an exception, so a payload cannot crash a decoder.
    """
    cur = doc
    for key in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(key, MISSING)
        elif isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
        else:
            return MISSING
        if cur is MISSING:
            return MISSING
    return cur


def signal_kind(signal: str) -> str | None:
    """``text``, ``gauge`` or ``counter`` for a vocabulary signal; None for an integrator's own.

    An adapter uses it to refuse, once and at connect, a mapping that cannot work (an
    integer code onto the text signal ``state``) instead of failing on every value.
    """
    spec = SIGNALS.get(signal)
    return spec.kind if spec else None


def datetime_to_ns(dt: datetime) -> int:
    """UTC nanoseconds since the epoch, exact (no float); a naive datetime is taken as UTC."""
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def scaled(value: object, scale: float, offset: float) -> object:
    """``value * scale + offset`` for a number; anything else as it came.

    Booleans and text pass unchanged: the pipeline validates them against the signal, and a
    scale must not turn ``True`` into ``1.0 W``.
    """
    if (scale == 1.0 and offset == 0.0) or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value * scale + offset
    return value
