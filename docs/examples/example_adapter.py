"""Example adapter: poll a machine's HTTP endpoint that answers with JSON (``type: http_json``).

Many small machines (energy meters, printer controllers, PLC gateways) expose a status page as
JSON. This adapter reads one such URL every ``interval_s`` and maps paths of the answer to
signals. It is the worked example of docs/writing-an-adapter.md: it imports from the adapter
SDK (``microfactory.gateway.sdk``) only, runs for real in tests/docs/test_docs_examples.py and
passes the conformance kit in tests/docs/test_example_conformance.py; copy it as the start of
your own adapter.

Signals it emits: whatever ``points`` map, for the one ``machine``; plus ``gap`` markers
(through the emitter) after the device was unreachable.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from microfactory.gateway.sdk import (
    MISSING,
    AdapterConfigBase,
    AdapterContext,
    AdapterPlugin,
    Backoff,
    ConnectionSupervisor,
    PayloadError,
    RawSample,
    check_unit,
    json_path,
    scaled,
)


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
        raw = json_path(doc, config.timestamp_path)
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise PayloadError(f"timestamp {config.timestamp_path!r} is not a number: {raw!r:.64}")
        if not math.isfinite(raw) or abs(raw) > 1e16:  # beyond year 318857 in ms: garbage
            raise PayloadError(f"timestamp {config.timestamp_path!r} is out of range: {raw!r}")
        ts_ns = round(raw * 1_000_000)
    samples = []
    for point in config.points:
        value = json_path(doc, point.path)
        if value is MISSING:
            continue  # a device may leave out what it has nothing to say about
        value = scaled(value, point.scale, point.offset)  # numbers only; text as it came
        origin = f"{config.url}#{point.path}"
        samples.append(
            RawSample(config.machine, point.signal, value, point.unit, ts_ns, "good", origin)
        )
    if not samples:
        wanted = ", ".join(p.path for p in config.points)
        raise PayloadError(f"none of the mapped paths ({wanted}) is in the answer")
    return samples


# ------------------------------------------------------------------------------ the adapter
class _Session:
    """One reachable device: ``run`` polls it until an answer fails; ``close`` lets it go."""

    def __init__(self, adapter: HttpJsonAdapter, client: httpx.AsyncClient, first: bytes) -> None:
        self._adapter = adapter
        self._client = client
        self._first: bytes | None = first

    async def run(self) -> str:
        """Hand over the answer that proved the device up, then poll; raise when it fails."""
        cfg = self._adapter.config
        while True:
            if self._first is not None:
                body, self._first = self._first, None
            else:
                await asyncio.sleep(cfg.interval_s)
                body = await self._adapter.fetch(self._client)
            await self._adapter.hand_over(body)

    async def close(self) -> None:
        await self._client.aclose()


class HttpJsonAdapter:
    """Polls one URL; many instances may run at once, so all state lives on the instance.

    The SDK's supervisor does the connection work every adapter needs the same way
    (connection states, capped jittered backoff, the gap after an outage, a bounded stop);
    this class only says how to reach the device (``_connect``) and what to do with an answer.
    """

    def __init__(self, config: HttpJsonAdapterConfig, context: AdapterContext) -> None:
        # No I/O here: the gateway builds every adapter before any of them connects.
        self.config = config
        self._context = context
        self.polls = 0
        self.supervisor = ConnectionSupervisor(
            context,
            name=config.name,
            machines=[config.machine],
            connect=self._connect,
            errors=(httpx.HTTPError,),  # unreachable or unhappy device: an outage, not a bug
            connect_timeout_s=config.timeout_s * 2,
            backoff=Backoff(
                initial_s=min(0.5, config.reconnect_max_s), max_s=config.reconnect_max_s
            ),
        )

    async def start(self) -> None:
        """Return at once; connecting and polling happen in the supervisor's task."""
        await self.supervisor.start()

    async def stop(self, timeout_s: float) -> None:
        """Finish the current poll, but never take longer than ``timeout_s``."""
        await self.supervisor.stop(timeout_s)

    async def _connect(self) -> _Session:
        """The device is up when it answers: the first answer opens the session."""
        client = httpx.AsyncClient(timeout=self.config.timeout_s)
        try:
            first = await self.fetch(client)
        except BaseException:
            await client.aclose()
            raise
        return _Session(self, client, first)

    async def fetch(self, client: httpx.AsyncClient) -> bytes:
        """One GET; an HTTP error status raises like a refused connection does."""
        self.polls += 1
        response = await client.get(self.config.url)
        response.raise_for_status()
        return response.content

    async def hand_over(self, body: bytes) -> None:
        """Give one answer to the gateway and wait until it is on disk.

        HTTP has no acknowledgement to delay, but waiting for ``ack`` before the next poll
        keeps at most one answer in memory: when the disk is slow, polling slows down instead
        of queueing without bound.
        """
        received_ns = self._context.clock()  # UTC ns, the context's clock (tests may fake it)
        self.supervisor.data_seen()
        emitter = self._context.emitter
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        def ack() -> None:  # may be called from another thread
            loop.call_soon_threadsafe(done.set)

        try:
            samples = decode(self.config, body, received_ns)
        except PayloadError as err:
            emitter.dead_letter(self.config.name, self.config.url, str(err), body, ack)
        except Exception as err:  # top-level guard: bad input must never kill the adapter
            self._context.logger.exception("unexpected error decoding %s", self.config.url)
            reason = f"internal error: {err!r}"
            emitter.dead_letter(self.config.name, self.config.url, reason, body, ack)
        else:
            emitter.submit(samples, ack)
        await done.wait()  # stop() bounds this wait: it cancels the session after its timeout


plugin = AdapterPlugin(
    config_model=HttpJsonAdapterConfig,
    load=lambda: HttpJsonAdapter,
    requirements=("httpx",),
)
