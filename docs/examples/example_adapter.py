"""Example adapter: poll a machine's HTTP endpoint that answers with JSON (``type: http_json``).

Many small machines (energy meters, printer controllers, PLC gateways) expose a status page as
JSON. This adapter reads one such URL every ``interval_s`` and maps paths of the answer to
signals. It is the worked example of docs/writing-an-adapter.md and runs for real in
tests/docs/test_docs_examples.py; copy it as the start of your own adapter.

Signals it emits: whatever ``points`` map, for the one ``machine``; plus ``gap`` markers
(through the emitter) after the device was unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from microfactory.gateway.adapters.base import AdapterConfigBase, AdapterContext, AdapterPlugin
from microfactory.gateway.errors import PayloadError
from microfactory.gateway.sample import RawSample
from microfactory.gateway.units import check_unit

log = logging.getLogger(__name__)
_MISSING = object()


# ------------------------------------------------------------------------------ config model
class PointSpec(BaseModel):
    """One value in the JSON answer mapped to one signal."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="dotted path into the JSON answer, e.g. power.value")
    signal: str
    unit: str | None = None
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        # Found by `microfactory config check`, not by the first answer of the night shift.
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v


class HttpJsonAdapterConfig(AdapterConfigBase):
    """Site-config model: selected by ``type: http_json``; unknown fields are refused."""

    type: Literal["http_json"] = "http_json"
    machine: str
    url: str
    interval_s: float = Field(default=1.0, ge=0.01, le=3600)
    timeout_s: float = Field(default=5.0, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, ge=0.1, le=600)
    timestamp_path: str | None = Field(
        default=None, description="path of the source time in epoch ms; none: time of the answer"
    )
    points: list[PointSpec] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected http://HOST[:PORT]/PATH, got {v!r}")
        return v

    def machines_referenced(self) -> set[str]:
        return {self.machine}


# ------------------------------------------------------------------------------ decoding (pure)
def _get(doc: Any, path: str) -> Any:
    cur = doc
    for key in path.split("."):
        if isinstance(cur, dict):
            cur = cur.get(key, _MISSING)
        elif isinstance(cur, list) and key.isdigit() and int(key) < len(cur):
            cur = cur[int(key)]
        else:
            return _MISSING
        if cur is _MISSING:
            return _MISSING
    return cur


def decode(config: HttpJsonAdapterConfig, body: bytes, received_ns: int) -> list[RawSample]:
    """One answer → raw samples; PayloadError (the reason in words) when nothing is usable.

    Values are passed on as found: the pipeline checks types, NaN, units and time limits and
    dead-letters what is wrong, so every adapter gets the same rules.
    """
    try:
        doc = json.loads(body)
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise PayloadError(f"answer is not valid JSON: {err}") from err
    if not isinstance(doc, dict):
        raise PayloadError(f"expected a JSON object, got {type(doc).__name__}")
    ts_ns = received_ns
    if config.timestamp_path is not None:
        raw = _get(doc, config.timestamp_path)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise PayloadError(f"timestamp {config.timestamp_path!r} is not a number: {raw!r:.64}")
        if not math.isfinite(raw) or abs(raw) > 1e16:  # beyond year 318857 in ms: garbage
            raise PayloadError(f"timestamp {config.timestamp_path!r} is out of range: {raw!r}")
        ts_ns = round(raw * 1_000_000)
    samples = []
    for point in config.points:
        value = _get(doc, point.path)
        if value is _MISSING:
            continue  # a device may leave out what it has nothing to say about
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = value * point.scale + point.offset
        origin = f"{config.url}#{point.path}"
        samples.append(
            RawSample(config.machine, point.signal, value, point.unit, ts_ns, "good", origin)
        )
    if not samples:
        wanted = ", ".join(p.path for p in config.points)
        raise PayloadError(f"none of the mapped paths ({wanted}) is in the answer")
    return samples


# ------------------------------------------------------------------------------ the adapter
class HttpJsonAdapter:
    """Polls one URL; many instances may run at once, so all state lives on the instance."""

    def __init__(self, config: HttpJsonAdapterConfig, context: AdapterContext) -> None:
        # No I/O here: the gateway builds every adapter before any of them connects.
        self.config = config
        self._emitter = context.emitter
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.polls = 0

    async def start(self) -> None:
        """Return at once; connecting and polling happen in the background task."""
        self._task = asyncio.create_task(self._run(), name=f"http_json:{self.config.name}")

    async def stop(self, timeout_s: float) -> None:
        """Finish the current poll, but never take longer than ``timeout_s``."""
        self._stopping.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._emitter.connection(self.config.name, "stopped")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _run(self) -> None:
        cfg = self.config
        delay = min(0.5, cfg.reconnect_max_s)
        down_since: int | None = None
        reason = ""
        connected = False
        self._emitter.connection(cfg.name, "connecting")
        async with httpx.AsyncClient(timeout=cfg.timeout_s) as client:
            while not self._stopping.is_set():
                try:
                    response = await client.get(cfg.url)
                    response.raise_for_status()
                except httpx.HTTPError as err:
                    # Unreachable or unhappy device: a connection problem, not bad data.
                    # Say so (connection state now, a gap once it is back) and back off.
                    if down_since is None:
                        down_since = time.time_ns()
                        reason = f"{type(err).__name__}: {err}"
                    if connected or self.polls == 0:
                        log.warning(
                            "http_json adapter %s: %s: %s", cfg.name, type(err).__name__, err
                        )
                    connected = False
                    self._emitter.connection(cfg.name, "disconnected")
                    self.polls += 1
                    await self._pause(delay)
                    delay = min(delay * 2, cfg.reconnect_max_s)
                    continue
                received_ns = time.time_ns()
                self.polls += 1
                if not connected:
                    connected = True
                    self._emitter.connection(cfg.name, "connected")
                    log.info("http_json adapter %s: reading %s", cfg.name, cfg.url)
                if down_since is not None:
                    self._emitter.gap(cfg.machine, down_since, received_ns, reason)
                    down_since = None
                delay = min(0.5, cfg.reconnect_max_s)
                await self._hand_over(response.content, received_ns)
                await self._pause(cfg.interval_s)

    async def _hand_over(self, body: bytes, received_ns: int) -> None:
        """Give one answer to the gateway and wait until it is on disk.

        HTTP has no acknowledgement to delay, but waiting for ``ack`` before the next poll
        keeps at most one answer in memory: when the disk is slow, polling slows down instead
        of queueing without bound.
        """
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def ack() -> None:  # may be called from another thread
            loop.call_soon_threadsafe(done.set)

        try:
            samples = decode(self.config, body, received_ns)
        except PayloadError as err:
            self._emitter.dead_letter(self.config.name, self.config.url, str(err), body, ack)
        except Exception as err:  # top-level guard: bad input must never kill the adapter
            log.exception("http_json adapter %s: unexpected error", self.config.name)
            reason = f"internal error: {err!r}"
            self._emitter.dead_letter(self.config.name, self.config.url, reason, body, ack)
        else:
            self._emitter.submit(samples, ack)
        await done.wait()  # stop() bounds this wait: it cancels the task after its timeout


plugin = AdapterPlugin(config_model=HttpJsonAdapterConfig, load=lambda: HttpJsonAdapter)
