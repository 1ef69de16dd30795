"""The gateway's Prometheus ``/metrics`` endpoint: every stage's counters and gauges.

One registry per gateway (no module state: several gateways may run in one process). Values
are read at scrape time: in-process counters from :class:`microfactory.gateway.health.Health`, spool
depth, age and drop counters from the spool file itself through a read-only connection of
its own (WAL lets it read while the gateway writes), so a scrape never waits for the
gateway's event loop or its spool thread.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from threading import Thread
from typing import TYPE_CHECKING, Any, get_args
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector

from .adapters.base import ConnectionState, DeviceState
from .health import Health

if TYPE_CHECKING:
    from .config import HealthSettings

log = logging.getLogger(__name__)
PREFIX = "microfactory_gateway"
STATES = get_args(ConnectionState)  # "stale" included: connected, but nothing comes
DEVICE_STATES = get_args(DeviceState)


class GatewayCollector(Collector):
    def __init__(
        self, health: Health, spool_path: Path, sinks: list[str], depth: Callable[[str], int]
    ) -> None:
        self._health = health
        self._spool_path = spool_path
        self._sinks = sinks
        self._depth = depth

    def _spool_view(self) -> tuple[dict[str, float], dict[str, int], int, int]:
        """(oldest undelivered age per sink, durable counters, rows, bytes) from the file."""
        ages: dict[str, float] = {}
        uri = f"file:{self._spool_path}?mode=ro"
        db = sqlite3.connect(uri, uri=True, timeout=1.0)
        try:
            now = time.time()
            cursors = dict(db.execute("SELECT sink, seq FROM cursors").fetchall())
            for sink in self._sinks:
                row = db.execute(
                    "SELECT spooled_s FROM samples WHERE seq > ? ORDER BY seq LIMIT 1",
                    (cursors.get(sink, 0),),
                ).fetchone()
                ages[sink] = now - row[0] if row else 0.0
            counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
            rows = int(db.execute("SELECT count(*) FROM samples").fetchone()[0])
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            free = db.execute("PRAGMA freelist_count").fetchone()[0]
            size = db.execute("PRAGMA page_size").fetchone()[0]
        finally:
            db.close()
        return ages, counters, rows, int((pages - free) * size)

    def collect(self) -> Iterator[Metric]:
        h = self._health
        for name, value, doc in (
            ("received", h.received, "samples adapters handed to the pipeline"),
            ("normalised", h.normalised, "samples that passed normalisation and validation"),
            ("spooled", h.spooled, "samples committed to the spool (acknowledged upstream)"),
            ("refused", h.refused, "samples turned away: spool or disk full, source cannot wait"),
            ("gaps", h.gaps, "data gaps reported by adapters (connection lost and back)"),
        ):
            yield CounterMetricFamily(f"{PREFIX}_{name}", doc, value=value)
        dead = CounterMetricFamily(
            f"{PREFIX}_dead_lettered", "messages or samples dead-lettered", labels=["source"]
        )
        for source, n in sorted(h.dead_lettered.items()):
            dead.add_metric([source], n)
        yield dead
        refused = CounterMetricFamily(
            f"{PREFIX}_context_refused",
            "machine contexts refused on arrival (forged, oversized, badly signed), by reason",
            labels=["reason"],
        )
        for reason, n in sorted(h.context_refused().items()):
            refused.add_metric([reason], n)
        yield refused
        per_sink = {
            "delivered": ("samples a sink accepted", h.delivered),
            "retried": ("failed writes retried later", h.retried),
            "quarantined": ("points a sink refused for good, kept in quarantine", h.quarantined),
        }
        for name, (doc, counter) in per_sink.items():
            fam = CounterMetricFamily(f"{PREFIX}_{name}", doc, labels=["sink"])
            for sink in self._sinks:
                fam.add_metric([sink], counter.get(sink, 0))
            yield fam
        up = GaugeMetricFamily(
            f"{PREFIX}_sink_up", "1 when the last write to the sink succeeded", labels=["sink"]
        )
        depth = GaugeMetricFamily(
            f"{PREFIX}_spool_depth", "samples waiting in the spool for a sink", labels=["sink"]
        )
        for sink in self._sinks:
            up.add_metric([sink], 0 if sink in h.sink_errors else 1)
            depth.add_metric([sink], self._depth(sink))
        yield up
        yield depth
        try:
            ages, counters, rows, nbytes = self._spool_view()
        except sqlite3.Error as err:
            log.warning("metrics: cannot read the spool: %s", err)
        else:
            age = GaugeMetricFamily(
                f"{PREFIX}_spool_oldest_age_seconds",
                "age of the oldest sample a sink has not taken yet",
                labels=["sink"],
            )
            for sink, a in ages.items():
                age.add_metric([sink], a)
            yield age
            dropped = CounterMetricFamily(
                f"{PREFIX}_dropped",
                "samples dropped from the spool before a sink took them (since spool creation)",
                labels=["sink", "reason"],
            )
            for sink in self._sinks:
                for reason in ("quota", "max_age"):
                    dropped.add_metric([sink, reason], counters.get(f"dropped:{reason}:{sink}", 0))
            yield dropped
            yield GaugeMetricFamily(f"{PREFIX}_spool_rows", "rows in the spool", value=rows)
            yield GaugeMetricFamily(
                f"{PREFIX}_spool_bytes", "bytes the spool uses on disk", value=nbytes
            )
        conn = GaugeMetricFamily(
            f"{PREFIX}_adapter_connected", "1 when the adapter is connected", labels=["adapter"]
        )
        state = GaugeMetricFamily(
            f"{PREFIX}_adapter_state", "adapter connection state", labels=["adapter", "state"]
        )
        for adapter, s in sorted(h.connections.items()):
            conn.add_metric([adapter], 1 if s == "connected" else 0)
            for candidate in STATES:
                state.add_metric([adapter, candidate], 1 if s == candidate else 0)
        yield conn
        yield state
        device = GaugeMetricFamily(
            f"{PREFIX}_device_state",
            "state of one device behind an adapter (live, stale: silent too long, offline: "
            "said it is gone)",
            labels=["adapter", "device", "state"],
        )
        for (adapter, name), s in sorted(h.devices.items()):
            for candidate in DEVICE_STATES:
                device.add_metric([adapter, name, candidate], 1 if s == candidate else 0)
        yield device


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # no line per scrape
        pass


HealthzReport = Callable[[], tuple[int, dict[str, object]]]


class MetricsServer:
    """``/metrics`` and ``/healthz`` on health.host:health.port (port 0: a free one).

    A thread of its own serves them, so both answer while the gateway's event loop is stuck.
    ``healthz`` is set by the runtime (see :mod:`.healthz`); other paths are 404.
    """

    def __init__(
        self,
        settings: HealthSettings,
        health: Health,
        spool_path: Path,
        sinks: list[str],
        depth: Callable[[str], int],
    ) -> None:
        self._settings = settings
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(GatewayCollector(health, spool_path, sinks, depth))
        self._server: WSGIServer | None = None
        self._thread: Thread | None = None
        self.port = 0
        self.healthz: HealthzReport | None = None

    def _app(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            return self._metrics(environ, start_response)
        if path == "/healthz" and self.healthz is not None:
            code, body = self.healthz()
            text = json.dumps(body).encode()
            status = "200 OK" if code == 200 else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [text]
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: /metrics or /healthz\n"]

    def start(self) -> None:
        s = self._settings
        try:
            self._metrics = make_wsgi_app(self.registry)
            server = make_server(s.host, s.port, self._app, ThreadingWSGIServer, _Quiet)
            self._thread = Thread(target=server.serve_forever, name="health-http", daemon=True)
            self._thread.start()
            self._server = server
        except OSError as err:
            # collecting data matters more than showing it: go on without /metrics
            log.error("metrics: cannot listen on %s:%d: %s", s.host, s.port, err)
            return
        self.port = int(self._server.server_address[1])
        log.info("health on http://%s:%d/metrics and /healthz", s.host, self.port)

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://{self._settings.host}:{self.port}/metrics"
