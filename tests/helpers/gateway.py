"""Helpers of the fault tests: a rate-controlled QoS 1 publisher, a site config, read-backs.

Every sample a test produces is numbered: machine ``mN``, signal ``power_active``, value = its
sequence number in the series, timestamp = a fixed origin + sequence number (µs steps). What a
sink holds can then be checked exactly: count, sum of values and first/last timestamp per
series (InfluxDB overwrites a point with the same series and timestamp, so a replayed batch
adds nothing).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.servers import InfluxDB1
from tests.helpers.waiting import wait_for, wait_for_sync

if TYPE_CHECKING:
    from microfactory.gateway.runtime import Gateway

SIGNAL = "power_active"
ORIGIN_NS = (time.time_ns() // 1_000_000_000) * 1_000_000_000  # whole second, test session start
STEP_NS = 1000


def unique_prefix() -> str:
    return f"flt{uuid.uuid4().hex[:8]}"


def site_dict(
    tmp: Path,
    broker_url: str,
    *,
    prefix: str,
    machines: int = 4,
    influx_url: str | None = None,
    database: str = "faults",
    batch_size: int = 1000,
    spool: dict[str, Any] | None = None,
    client_id: str | None = None,
    protocol: str = "5",
) -> dict[str, Any]:
    """A gateway reading ``<prefix>/<machine>/<signal>`` JSON ``{"ts": ns, "value": x}``."""
    data: dict[str, Any] = {
        "site": "faults",
        "mqtt": {"url": broker_url, "client_id": client_id or f"gw-{prefix}"},
        "machines": [{"id": f"m{i}"} for i in range(1, machines + 1)],
        "adapters": [
            {
                "type": "mqtt",
                "name": "mqtt-in",
                "protocol": protocol,
                "subscriptions": [
                    {
                        "topic": f"{prefix}/{{machine}}/{{signal}}",
                        "timestamp": {"path": "ts", "format": "epoch_ns"},
                        "value": {"path": "value", "unit_path": None},
                    }
                ],
            }
        ],
        "local_history": {"enabled": False},
        "spool": {"path": str(tmp / "spool.sqlite"), "durability": "normal", **(spool or {})},
        "health": {"port": 0},
    }
    if influx_url is not None:
        data["influxdb"] = {
            "api": "v1",
            "url": influx_url,
            "database": database,
            "batch_size": batch_size,
            "timeout_s": 5,
        }
    return data


class Publisher:
    """Machines publishing numbered QoS 1 samples at a fixed rate from their own thread.

    Only samples the broker acknowledged (PUBACK) count as produced; paho retransmits the
    unacknowledged ones after a reconnect (its session is persistent too).
    """

    def __init__(
        self, broker_url: str, prefix: str, *, machines: int = 4, max_inflight: int = 1000
    ) -> None:
        host, port = broker_url.removeprefix("mqtt://").split(":")
        self.prefix = prefix
        self.machines = [f"m{i}" for i in range(1, machines + 1)]
        self.sent: dict[str, int] = dict.fromkeys(self.machines, 0)
        self.extra = 0  # messages outside the numbered series (probes, poison, garbage)
        self._acked = 0
        self._lock = threading.Lock()  # never held around a paho call (paho calls back into it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"pub-{prefix}",
            clean_session=False,
            protocol=mqtt.MQTTv311,
        )
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        # paho's hint says int, but it sleeps any number: reconnect within a fifth of a second
        self.client.reconnect_delay_set(min_delay=0.2, max_delay=1)  # type: ignore[arg-type]
        self.client.on_publish = self._on_publish
        self.client.connect_async(host, int(port), keepalive=10)
        self.client.loop_start()

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        with self._lock:
            self._acked += 1

    def wait_connected(self, timeout_s: float = 10) -> None:
        wait_for_sync(self.client.is_connected, timeout_s, "publisher connected")

    def publish_one(self, machine: str) -> None:
        i = self.sent[machine]
        payload = orjson.dumps({"ts": ORIGIN_NS + i * STEP_NS, "value": i})
        self.client.publish(f"{self.prefix}/{machine}/{SIGNAL}", payload, qos=1)
        self.sent[machine] = i + 1

    def publish_raw(self, topic: str, payload: bytes) -> None:
        """One message outside the numbered series."""
        self.extra += 1
        self.client.publish(topic, payload, qos=1)

    def publish(self, per_machine: int) -> None:
        """Publish ``per_machine`` samples on each machine at once (no rate limit)."""
        for _ in range(per_machine):
            for m in self.machines:
                self.publish_one(m)

    def start(self, rate_per_s: float) -> None:
        """Publish at ``rate_per_s`` samples per second in total until :meth:`stop_publishing`."""

        def run() -> None:
            t0 = time.monotonic()
            done = 0
            while not self._stop.is_set():
                due = int((time.monotonic() - t0) * rate_per_s)
                while done < due:
                    self.publish_one(self.machines[done % len(self.machines)])
                    done += 1
                time.sleep(0.005)

        self._thread = threading.Thread(target=run, name="publisher", daemon=True)
        self._thread.start()

    def stop_publishing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    @property
    def total_acked(self) -> int:
        """Numbered samples acknowledged by the broker (valid once all are)."""
        with self._lock:
            return self._acked - self.extra

    def wait_all_acked(self, timeout_s: float = 30) -> None:
        wait_for_sync(
            lambda: self.total_acked == self.total_sent,
            timeout_s,
            f"broker PUBACK of all {self.total_sent} samples",
        )

    def close(self) -> None:
        self.stop_publishing()
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class SeriesStats:
    count: int
    total: float
    first_ns: int
    last_ns: int


def expected_stats(n: int) -> SeriesStats:
    """What a series of ``n`` numbered samples must look like in a sink."""
    return SeriesStats(n, float(n * (n - 1) // 2), ORIGIN_NS, ORIGIN_NS + (n - 1) * STEP_NS)


def influx_stats(influx: InfluxDB1, database: str, signal: str = SIGNAL) -> dict[str, SeriesStats]:
    """count / sum / first / last of ``value`` per machine, as InfluxDB stores it."""
    out: dict[str, SeriesStats] = {}
    where = f"\"signal\" = '{signal}'"
    for agg in ("count", "sum", "first", "last"):
        rows = influx.rows(
            f'SELECT {agg}("value") FROM "telemetry" WHERE {where} AND time >= 0 '
            'GROUP BY "machine"',
            database,
        )
        for row in rows:
            m = row["machine"]
            st = out.setdefault(m, SeriesStats(0, 0.0, 0, 0))
            if agg == "count":
                st.count = int(row["count"])
            elif agg == "sum":
                st.total = float(row["sum"])
    # first/last by time: ask for the timestamps themselves
    for m, st in out.items():
        first = influx.rows(
            f'SELECT "value" FROM "telemetry" WHERE {where} AND "machine" = \'{m}\' '
            "ORDER BY time ASC LIMIT 1",
            database,
        )
        last = influx.rows(
            f'SELECT "value" FROM "telemetry" WHERE {where} AND "machine" = \'{m}\' '
            "ORDER BY time DESC LIMIT 1",
            database,
        )
        st.first_ns, st.last_ns = int(first[0]["time"]), int(last[0]["time"])
    return out


def influx_total(influx: InfluxDB1, database: str, signal: str = SIGNAL) -> int:
    try:
        rows = influx.rows(
            f'SELECT count("value") FROM "telemetry" WHERE "signal" = \'{signal}\'', database
        )
    except AssertionError:  # database not created yet
        return 0
    return int(rows[0]["count"]) if rows else 0


class GatewayProcess:
    """``microfactory gateway --config FILE`` as a child process, as systemd would run it."""

    def __init__(self, config: Path, log: Path, *, stop_timeout_s: float = 10.0) -> None:
        self.config = config
        self.log = log
        self.stop_timeout_s = stop_timeout_s
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "microfactory.cli",
                "gateway",
                "--config",
                str(self.config),
                "--stop-timeout",
                str(self.stop_timeout_s),
                "--log-level",
                "info",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM; the exit code (fails the test if it does not exit in ``timeout_s``)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise AssertionError(f"gateway did not exit within {timeout_s} s of SIGTERM") from None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def spool_depth(path: Path, sink: str = "influxdb") -> tuple[int, dict[str, int]]:
    """(samples the sink has not taken, the durable counters) from a closed spool file."""
    with sqlite3.connect(path) as db:
        cursor = db.execute("SELECT seq FROM cursors WHERE sink = ?", (sink,)).fetchone()[0]
        depth = db.execute("SELECT count(*) FROM samples WHERE seq > ?", (cursor,)).fetchone()[0]
        counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
    return int(depth), counters


def wait_flowing(pub: Publisher, influx: InfluxDB1, database: str, timeout_s: float = 30) -> None:
    """Probe end to end (signal ``temperature`` of m1) until the gateway's data flows."""
    deadline = time.monotonic() + timeout_s
    n = 0
    while influx_total(influx, database, "temperature") == 0:
        if time.monotonic() > deadline:
            raise AssertionError(f"no data through the gateway after {timeout_s} s")
        payload = orjson.dumps({"ts": ORIGIN_NS - 10**9 + n, "value": 20.0})
        pub.publish_raw(f"{pub.prefix}/m1/temperature", payload)
        n += 1
        time.sleep(0.25)


async def both_connected(gw: Gateway, pub: Publisher, timeout_s: float = 15) -> None:
    """Wait until the gateway's ``mqtt-in`` adapter and the publisher are both on the broker."""
    await wait_for(lambda: gw.health.connections.get("mqtt-in") == "connected", timeout_s, "mqtt")
    await asyncio.to_thread(pub.wait_connected)
