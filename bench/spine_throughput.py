"""Throughput of the spine: MQTT JSON (QoS 1) → gateway (spool on) → InfluxDB 1.x.

A rate-controlled publisher sends telemetry for ``--machines`` machines at a fixed message
rate for ``--duration`` seconds to a real Mosquitto; a real gateway process (``microfactory
gateway``) spools it and writes it to a real InfluxDB 1.x. Afterwards the samples in InfluxDB
are counted. A rate *holds* when 100.0 % of the samples sent are stored.

Printed per run: offered and achieved samples/s, % stored, the gateway's peak RSS (VmHWM) and
CPU seconds per 1k samples; per rate, the median of the runs. Everything runs on 127.0.0.1
with data in a temporary directory. Not a test: figures depend on the machine and its load.

    .venv/bin/python bench/spine_throughput.py --rates 2000,5000,10000 --duration 20 --runs 3
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml
from common import proc_stats, start_gateway
from paho.mqtt.enums import CallbackAPIVersion

from tests.helpers.servers import InfluxDB1, Mosquitto

FIELDS_PER_MESSAGE = 4  # power, energy, part count, temperature
DB = "bench"


@dataclass
class RunResult:
    rate_msg_s: int
    sent_samples: int
    stored_samples: int
    seconds: float
    peak_rss_mb: float
    cpu_s: float

    @property
    def stored_pct(self) -> float:
        return 100.0 * self.stored_samples / max(1, self.sent_samples)

    @property
    def samples_per_s(self) -> float:
        return self.stored_samples / self.seconds

    @property
    def cpu_ms_per_1k(self) -> float:
        return 1000.0 * self.cpu_s / max(1, self.stored_samples / 1000)


def site_config(mqtt_url: str, influx_url: str, data_dir: Path, machines: int) -> dict[str, object]:
    return {
        "site": "bench",
        "mqtt": {"url": mqtt_url, "client_id": "bench-gateway"},
        "influxdb": {"api": "v1", "url": influx_url, "database": DB, "batch_size": 5000},
        "local_history": {"enabled": False},
        "spool": {"path": str(data_dir / "spool.sqlite")},
        "health": {"enabled": False},
        "machines": [{"id": f"m{i:03d}"} for i in range(machines)],
        "adapters": [
            {
                "type": "mqtt",
                "name": "bench",
                "subscriptions": [
                    {
                        "topic": "bench/{machine}/telemetry",
                        "timestamp": {"path": "ts", "format": "epoch_ns"},
                        "fields": [
                            {"path": "p", "signal": "power_active", "unit": "W"},
                            {"path": "e", "signal": "energy_active", "unit": "Wh"},
                            {"path": "n", "signal": "part_count"},
                            {"path": "t", "signal": "temperature_spindle", "unit": "degC"},
                        ],
                    }
                ],
            }
        ],
    }


def publish(port: int, rate: int, duration_s: float, machines: int) -> int:
    """Publish ``rate`` msg/s for ``duration_s`` at QoS 1; return samples sent."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent = 0
    start = time.monotonic()
    total = int(rate * duration_s)
    ts0 = time.time_ns()
    try:
        while sent < total:
            due = int((time.monotonic() - start) * rate) + 1
            for _ in range(min(due, total) - sent):
                m = sent % machines
                payload = json.dumps(
                    {
                        "ts": ts0 + sent * 1000,
                        "p": 1000.0 + m,
                        "e": sent * 0.01,
                        "n": sent,
                        "t": 40.5,
                    }
                )
                client.publish(f"bench/m{m:03d}/telemetry", payload, qos=1)
                sent += 1
            time.sleep(0.001)
        # wait until the broker has acknowledged everything we sent
        deadline = time.monotonic() + 60
        while client._out_messages and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        client.disconnect()
        client.loop_stop()
    return sent * FIELDS_PER_MESSAGE


def stored(influx: InfluxDB1) -> int:
    try:
        rows = influx.rows('SELECT count("value") FROM "telemetry"', DB)
    except Exception:  # the database may not exist yet
        return 0
    return int(rows[0]["count"]) if rows else 0


def one_run(rate: int, duration_s: float, machines: int) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="mf-bench-") as tmp:
        tmp_path = Path(tmp)
        # the broker may queue more for a subscriber that falls behind than its default 1000
        with (
            Mosquitto(
                tmp_path / "mosquitto", persistence=False, extra="max_queued_messages 1000000"
            ) as broker,
            InfluxDB1(tmp_path / "influxdb") as influx,
        ):
            config = tmp_path / "site.yaml"
            config.write_text(
                yaml.safe_dump(site_config(broker.url, influx.url, tmp_path, machines))
            )
            gw = start_gateway(config, tmp_path / "gateway.log")
            try:
                time.sleep(2.0)  # connect and subscribe
                t0 = time.monotonic()
                sent = publish(broker.port, rate, duration_s, machines)
                peak = 0.0
                last, stable_since = -1, time.monotonic()
                while (
                    time.monotonic() - stable_since < 3.0
                    and time.monotonic() - t0 < duration_s + 120
                ):
                    n = stored(influx)
                    peak, cpu = proc_stats(gw.pid)
                    if n >= sent:
                        break
                    if n != last:
                        last, stable_since = n, time.monotonic()
                    time.sleep(0.5)
                elapsed = time.monotonic() - t0
                n = stored(influx)
                peak, cpu = proc_stats(gw.pid)
            finally:
                gw.send_signal(signal.SIGTERM)
                gw.wait(60)
    return RunResult(rate, sent, n, elapsed, peak, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--rates", default="1000,2500,5000", help="messages/s, comma separated")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of publishing")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--machines", type=int, default=20)
    args = parser.parse_args()
    print(
        f"{FIELDS_PER_MESSAGE} samples per message, {args.machines} machines, "
        f"{args.duration:g} s per run, {args.runs} runs per rate"
    )
    print(
        f"{'msg/s':>7} {'offered/s':>10} {'stored/s':>10} {'stored %':>9} {'peak RSS MB':>12} {'CPU ms/1k':>10}"
    )
    for rate in [int(r) for r in args.rates.split(",")]:
        results = []
        for _ in range(args.runs):
            r = one_run(rate, args.duration, args.machines)
            results.append(r)
            print(
                f"{rate:>7} {rate * FIELDS_PER_MESSAGE:>10} {r.samples_per_s:>10.0f} "
                f"{r.stored_pct:>9.3f} {r.peak_rss_mb:>12.1f} {r.cpu_ms_per_1k:>10.1f}",
                flush=True,
            )
        print(
            f"{'median':>7} {rate * FIELDS_PER_MESSAGE:>10} "
            f"{statistics.median(r.samples_per_s for r in results):>10.0f} "
            f"{statistics.median(r.stored_pct for r in results):>9.3f} "
            f"{statistics.median(r.peak_rss_mb for r in results):>12.1f} "
            f"{statistics.median(r.cpu_ms_per_1k for r in results):>10.1f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
