"""InfluxDB 2.x / 3.x (and anything serving ``/api/v2/write``) through influxdb-client."""

from __future__ import annotations

import asyncio

from influxdb_client.client.influxdb_client import InfluxDBClient
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.domain.write_precision import WritePrecision
from influxdb_client.rest import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

from ...config import InfluxSettings
from ...errors import SinkError
from ...lineprotocol import encode
from ...sample import Sample
from ..base import SinkContext
from .http_errors import classify


class InfluxV2Sink:
    def __init__(
        self, settings: InfluxSettings, context: SinkContext, *, name: str = "influxdb"
    ) -> None:
        self.name = name
        site = context.site
        self.batch_size = settings.batch_size
        self._settings = settings
        self._site = site
        self._client: InfluxDBClient | None = None
        self._log = context.logger
        self._missing_told = False  # the bucket's absence is logged once per spell

    async def open(self) -> None:
        s = self._settings
        # Synchronous writes in a worker thread: the spool, not the client, is our buffer, so
        # influxdb-client's own batching (which drops on failure) stays unused.
        self._client = InfluxDBClient(
            url=s.url,
            token=s.token or "",
            org=s.org or "",
            timeout=int(s.timeout_s * 1000),
            retries=False,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)

    async def ensure_database(self) -> None:
        """Nothing to create: InfluxDB 2.x/3.x buckets are made by their administrator.

        A missing bucket is reported (once, by the write that meets it) and retried.
        """

    async def close(self) -> None:
        if self._client is not None:
            await asyncio.to_thread(self._client.close)

    def describe(self, sample: Sample) -> str:
        return encode(sample, self._site, keep_newlines=False)

    def _write(self, lines: list[str]) -> None:
        self._write_api.write(
            bucket=self._settings.bucket or "",
            org=self._settings.org or "",
            record=lines,
            write_precision=WritePrecision.NS,  # type: ignore[arg-type]
        )

    async def write(self, samples: list[Sample]) -> None:
        # our encoder, not influxdb-client's Point: the same escaping as every other sink, and
        # no raw newline inside text, which VictoriaMetrics would take for the end of the line
        lines = [encode(s, self._site, keep_newlines=False) for s in samples]
        where = f"influxdb {self._settings.url}"
        try:
            await asyncio.to_thread(self._write, lines)
        except ApiException as err:
            if err.status == 404 and not self._missing_told:
                self._missing_told = True
                self._log.error(
                    "influxdb: bucket %s of org %s not found; create it (samples wait in the "
                    "spool): %s",
                    self._settings.bucket,
                    self._settings.org,
                    str(err.body or err.reason)[:200],
                )
            headers: dict[str, str] = dict(err.headers or {})
            raise classify(
                int(err.status or 0), str(err.body or err.reason), headers.get("Retry-After"), where
            ) from err
        except (Urllib3Error, OSError) as err:
            raise SinkError(f"{where}: {type(err).__name__}: {err}", retryable=True) from err
        if self._missing_told:
            self._missing_told = False
            self._log.info("influxdb: bucket %s is there now", self._settings.bucket)
