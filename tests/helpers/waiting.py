"""Bounded waits for tests that drive real servers: poll a condition, never sleep-and-hope."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from microfactory.gateway.runtime import Gateway


async def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Return as soon as ``condition()`` is true; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def wait_for_sync(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """:func:`wait_for` for code outside an event loop."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


async def gateway_quiet(gw: Gateway, settle_s: float = 1.0, timeout_s: float = 30.0) -> None:
    """Wait until no new sample has reached ``gw`` for ``settle_s``: the last messages are in."""
    deadline = time.monotonic() + timeout_s
    last, since = gw.health.received, time.monotonic()
    while time.monotonic() - since < settle_s:
        assert time.monotonic() < deadline, "gateway never went quiet"
        await asyncio.sleep(0.1)
        if gw.health.received != last:
            last, since = gw.health.received, time.monotonic()
