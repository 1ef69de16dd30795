"""MQTT JSON at QoS 1 → gateway (spool on, durability full) → InfluxDB 1.x, rate-controlled.

For each rate: machines publish numbered samples at that rate for --duration seconds; a rate
holds when 100.0 % of what the broker acknowledged is in InfluxDB afterwards. Prints per run:
sent, stored, loss, gateway peak RSS and CPU per 1k samples/s.

    .venv/bin/python bench/mqtt_to_influx.py --rates 5000,10000,20000 --duration 60 --runs 3
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import median_report, proc_stats, start_gateway, wait

from tests.helpers.gateway import (
    Publisher,
    influx_total,
    site_dict,
    unique_prefix,
    wait_flowing,
    write_config,
)
from tests.helpers.servers import InfluxDB1, Mosquitto


def one_run(rate: int, duration: float, machines: int, protocol: str) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-mqtt-"))
    prefix = unique_prefix()
    with (
        Mosquitto(
            tmp / "mosquitto", extra="max_queued_messages 10000000\nmax_inflight_messages 0"
        ) as broker,
        InfluxDB1(tmp / "influx") as influx,
    ):
        data = site_dict(
            tmp,
            broker.url,
            prefix=prefix,
            machines=machines,
            influx_url=influx.url,
            batch_size=5000,
            spool={"durability": "full"},
            protocol=protocol,
        )
        data["adapters"][0]["receive_maximum"] = 20000
        config = write_config(tmp / "site.yaml", data)
        gw = start_gateway(config, tmp / "gateway.log")
        pub = Publisher(broker.url, prefix, machines=machines, max_inflight=20000)
        try:
            pub.wait_connected()
            wait_flowing(pub, influx, "faults")
            probes = influx_total(influx, "faults", "temperature")
            _, cpu0 = proc_stats(gw.pid)
            t0 = time.monotonic()
            pub.start(rate)
            time.sleep(duration)
            pub.stop_publishing()
            elapsed = time.monotonic() - t0
            _, cpu1 = proc_stats(gw.pid)
            try:
                pub.wait_all_acked(60)
            except AssertionError as err:  # reported, not fatal: the figures still count
                print(f"  {err}; {pub.total_sent - pub.total_acked} never acknowledged")
            sent = pub.total_acked
            wait(lambda: influx_total(influx, "faults") >= sent, 120)
            stored = influx_total(influx, "faults")
            rss, _ = proc_stats(gw.pid)
            del probes
        finally:
            gw.terminate()
            gw.wait(30)
            pub.close()
    achieved = sent / elapsed
    return {
        "rate": rate,
        "sent": sent,
        "stored": stored,
        "loss_pct": 100.0 * (sent - stored) / max(1, sent),
        "achieved": achieved,
        "rss_mb": rss,
        "cpu_per_1k": (cpu1 - cpu0) / elapsed / (achieved / 1000),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="5000,10000,20000")
    ap.add_argument("--duration", type=float, default=60)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--machines", type=int, default=20)
    ap.add_argument("--protocol", default="5", choices=["5", "3.1.1"])
    args = ap.parse_args()
    for rate in (int(r) for r in args.rates.split(",")):
        rss, cpu, achieved, holds = [], [], [], 0
        for i in range(args.runs):
            r = one_run(rate, args.duration, args.machines, args.protocol)
            print(
                f"rate {rate}/s run {i + 1}: sent {r['sent']:.0f} (publisher achieved "
                f"{r['achieved']:,.0f}/s), stored {r['stored']:.0f}, loss {r['loss_pct']:.3f} %, "
                f"gateway peak RSS {r['rss_mb']:.1f} MB, CPU {r['cpu_per_1k']:.3f} s/s per 1k/s",
                flush=True,
            )
            rss.append(r["rss_mb"])
            cpu.append(r["cpu_per_1k"])
            achieved.append(r["achieved"])
            holds += r["loss_pct"] == 0.0
        print(f"rate {rate}/s: held in {holds}/{args.runs} runs")
        median_report(f"rate {rate}/s achieved", achieved, "samples/s")
        median_report(f"rate {rate}/s peak RSS", rss, "MB")
        median_report(f"rate {rate}/s CPU per 1k samples/s", cpu, "core-s/s")


if __name__ == "__main__":
    main()
