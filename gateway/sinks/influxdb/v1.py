"""InfluxDB 1.x through its ``/write`` API (what Debian and Raspberry Pi OS ship)."""

from __future__ import annotations

import contextlib

import httpx

from ...config import InfluxSettings
from ...errors import SinkError
from ...lineprotocol import encode, encode_batch
from ...sample import Sample
from ..base import SinkContext
from .http_errors import classify


class InfluxV1Sink:
    def __init__(
        self, settings: InfluxSettings, context: SinkContext, *, name: str = "influxdb"
    ) -> None:
        self.name = name
        site = context.site
        self.batch_size = settings.batch_size
        self._settings = settings
        self._site = site
        self._client: httpx.AsyncClient | None = None
        params = {"db": settings.database or "", "precision": "ns"}
        if settings.retention_policy:
            params["rp"] = settings.retention_policy
        if settings.username:
            params["u"] = settings.username
            params["p"] = settings.password or ""
        self._params = params

    async def open(self) -> None:
        self._client = httpx.AsyncClient(
            base_url=self._settings.url, timeout=self._settings.timeout_s
        )

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def describe(self, sample: Sample) -> str:
        return encode(sample, self._site)

    async def write(self, samples: list[Sample]) -> None:
        assert self._client is not None, "sink not opened"
        body = encode_batch(samples, self._site)
        try:
            resp = await self._client.post("/write", params=self._params, content=body)
        except httpx.HTTPError as err:
            raise SinkError(
                f"influxdb {self._settings.url}: {type(err).__name__}: {err}", retryable=True
            ) from err
        if resp.status_code != 204:
            raise classify(
                resp.status_code,
                resp.text,
                resp.headers.get("Retry-After"),
                f"influxdb {self._settings.url}",
            )

    async def ensure_database(self) -> None:
        """Create the database if missing (InfluxDB 1.x does not create it on write)."""
        assert self._client is not None
        params = {k: v for k, v in self._params.items() if k in ("u", "p")}
        params["q"] = f'CREATE DATABASE "{self._settings.database}"'
        # the write path reports the real problem, with retries
        with contextlib.suppress(httpx.HTTPError):
            await self._client.post("/query", params=params)
