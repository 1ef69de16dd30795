"""InfluxDB 1.x through its ``/write`` API (what Debian and Raspberry Pi OS ship)."""

from __future__ import annotations

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
        self._log = context.logger
        # the database is known to exist only after a create or a write went through; any
        # failed write (server down, 404) makes the next attempt create it first
        self._db_ok = False
        self._db_problem: str | None = None  # told once until it changes
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
        if not self._db_ok:
            await self.ensure_database()
        body = encode_batch(samples, self._site)
        resp = await self._post(body)
        if resp.status_code == 404 and "database not found" in resp.text:
            # dropped or never created (InfluxDB was down at our start): create, try again
            self._db_ok = False
            await self.ensure_database()
            resp = await self._post(body)
        if resp.status_code != 204:
            raise classify(
                resp.status_code,
                resp.text,
                resp.headers.get("Retry-After"),
                f"influxdb {self._settings.url}",
            )
        self._db_ok = True

    async def _post(self, body: bytes) -> httpx.Response:
        assert self._client is not None, "sink not opened"
        try:
            return await self._client.post("/write", params=self._params, content=body)
        except httpx.HTTPError as err:
            self._db_ok = False  # it may come back empty: check the database on reconnect
            raise SinkError(
                f"influxdb {self._settings.url}: {type(err).__name__}: {err}", retryable=True
            ) from err

    async def ensure_database(self) -> None:
        """Create the database if missing (InfluxDB 1.x does not create it on write).

        Called at start and whenever the sink reconnects after a failure. A server that is
        down is left to the write path (it reports and retries); a server that refuses the
        creation (no admin rights) is told once, clearly.
        """
        assert self._client is not None
        params = {k: v for k, v in self._params.items() if k in ("u", "p")}
        params["q"] = f'CREATE DATABASE "{self._settings.database}"'
        try:
            resp = await self._client.post("/query", params=params)
        except httpx.HTTPError:
            return  # down: the write path reports the real problem, with retries
        problem = None
        if resp.status_code != 200 or '"error"' in resp.text:
            problem = f"HTTP {resp.status_code}: {resp.text.strip()[:200]}"
        if problem is None:
            self._db_ok = True
            if self._db_problem is not None:
                self._log.info("influxdb: database %s is there now", self._settings.database)
            self._db_problem = None
        elif problem != self._db_problem:
            self._db_problem = problem
            self._log.error(
                "influxdb: cannot create database %s (create it by hand, or give the "
                "user the right to): %s",
                self._settings.database,
                problem,
            )
