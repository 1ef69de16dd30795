"""Backlog drain: a spool holding N samples (default 1M) delivered to InfluxDB 1.x while live
MQTT data flows. Prints the drain time and rate, and whether live data kept arriving.

    .venv/bin/python bench/backlog_drain.py --samples 1000000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from common import median_report, proc_stats, start_gateway, wait

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.sample import Sample
from microfactory.gateway.spool import Spool
from tests.helpers.gateway import Publisher, influx_total, site_dict, unique_prefix, write_config
from tests.helpers.servers import InfluxDB1, Mosquitto


async def fill(site_data: dict[str, object], n: int) -> None:
    site = parse_site_config(site_data, "bench")
    spool = Spool(site.spool, ["influxdb"])
    await spool.open()
    t0 = time.time_ns()
    chunk = 20_000
    for start in range(0, n, chunk):
        await spool.append(
            [
                Sample(f"m{i % 50 + 1}", "energy_active", float(i), "Wh", t0 + i * 1000)
                for i in range(start, min(n, start + chunk))
            ]
        )
    await spool.close()


def one_run(n: int, live_rate: int) -> tuple[float, float, int, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    prefix = unique_prefix()
    with Mosquitto(tmp / "mosquitto") as broker, InfluxDB1(tmp / "influx") as influx:
        data = site_dict(
            tmp,
            broker.url,
            prefix=prefix,
            machines=50,
            influx_url=influx.url,
            batch_size=10_000,
            spool={"max_bytes": 4 << 30},
        )
        asyncio.run(fill(data, n))
        config = write_config(tmp / "site.yaml", data)
        pub = Publisher(broker.url, prefix, machines=4)
        pub.wait_connected()
        t0 = time.monotonic()
        gw = start_gateway(config, tmp / "gateway.log")
        try:
            pub.start(live_rate)
            ok = wait(lambda: influx_total(influx, "faults", "energy_active") >= n, 300)
            drain_s = time.monotonic() - t0
            pub.stop_publishing()
            live = influx_total(influx, "faults")
            rss, _ = proc_stats(gw.pid)
            if not ok:
                print("  backlog NOT drained within 300 s")
        finally:
            gw.terminate()
            gw.wait(30)
            pub.close()
    return drain_s, n / drain_s, live, rss


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=1_000_000)
    ap.add_argument("--live-rate", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    times, rates = [], []
    for i in range(args.runs):
        s, r, live, rss = one_run(args.samples, args.live_rate)
        print(
            f"run {i + 1}: {args.samples:,} spooled samples drained in {s:.1f} s "
            f"({r:,.0f}/s); {live:,} live samples stored meanwhile; peak RSS {rss:.0f} MB",
            flush=True,
        )
        times.append(s)
        rates.append(r)
    median_report("drain time", times, "s")
    median_report("drain rate", rates, "samples/s")


if __name__ == "__main__":
    main()
