"""OPC UA data changes per second through one gateway process (in-process, spool on).

An asyncua server with --nodes variables, each written --hz times a second; the gateway
subscribes to all of them (publishing interval 100 ms, sampling 0 = every change) and spools
them to the local history. Prints data changes offered by the server and taken by the gateway.

    .venv/bin/python bench/opcua_rate.py --nodes 200 --hz 50 --duration 30 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from asyncua import Server, ua
from common import median_report

from gateway.config import parse_site_config
from gateway.runtime import Gateway
from microfactory.ports import free_port

NS = "urn:bench:opcua"


async def run_once(nodes: int, hz: float, duration: float) -> tuple[float, float]:
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
    idx = await server.register_namespace(NS)
    obj = await server.nodes.objects.add_object(idx, "Bench")
    variables = [
        await obj.add_variable(ua.NodeId(f"v{i}", idx), f"v{i}", 0.0) for i in range(nodes)
    ]
    await server.start()
    tmp = Path(tempfile.mkdtemp(prefix="bench-opcua-"))
    site = parse_site_config(
        {
            "site": "bench",
            "machines": [{"id": "m1"}],
            "adapters": [
                {
                    "type": "opcua",
                    "name": "bench",
                    "machine": "m1",
                    "endpoint": f"opc.tcp://127.0.0.1:{port}/bench",
                    "namespace_uri": NS,
                    "publishing_interval_ms": 100,
                    "queue_size": 1000,
                    "nodes": [
                        {"node": f"s=v{i}", "signal": f"s{i}", "sampling_interval_ms": 0}
                        for i in range(nodes)
                    ],
                }
            ],
            "local_history": {"enabled": True, "path": str(tmp / "history.sqlite")},
            "spool": {"path": str(tmp / "spool.sqlite"), "durability": "normal"},
            "health": {"port": 0},
        },
        "bench",
    )
    gw = Gateway(site)
    await gw.start()
    try:
        for _ in range(300):  # bounded wait for the session
            if gw.health.connections.get("bench") == "connected":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        written = 0
        r0 = gw.health.received
        t0 = time.monotonic()
        tick = 0
        while time.monotonic() - t0 < duration:
            tick += 1
            for v in variables:
                await server.write_attribute_value(
                    v.nodeid, ua.DataValue(ua.Variant(float(tick), ua.VariantType.Double))
                )
            written += nodes
            delay = t0 + tick / hz - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(1.0)
        taken = gw.health.received - r0
    finally:
        await gw.stop(timeout_s=10)
        await server.stop()
    return written / elapsed, taken / elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--hz", type=float, default=50)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    offered, taken = [], []
    for i in range(args.runs):
        o, t = asyncio.run(run_once(args.nodes, args.hz, args.duration))
        print(f"run {i + 1}: server wrote {o:,.0f} changes/s, gateway took {t:,.0f}/s", flush=True)
        offered.append(o)
        taken.append(t)
    median_report("offered", offered, "data changes/s")
    median_report("taken by the gateway", taken, "data changes/s")


if __name__ == "__main__":
    main()
