"""OPC UA data changes per second through one gateway process (spool on).

An asyncua server in its own process (as a machine's controller is) with --nodes variables,
each written --hz times a second; the gateway subscribes to all of them (publishing interval
100 ms, sampling 0 = every change) and spools them to the local history. Prints data changes
offered by the server and taken by the gateway, and the gateway process's CPU use.

    .venv/bin/python bench/opcua_rate.py --nodes 200 --hz 50 --duration 30 --runs 3
    .venv/bin/python bench/opcua_rate.py --security sign-encrypt   # Basic256Sha256 SignAndEncrypt

``--security none`` (the default here, to compare with earlier figures) needs
``allow_insecure``; ``sign`` / ``sign-encrypt`` are what a secured controller costs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import resource
import tempfile
import time
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path

from asyncua import ua
from asyncua.server.server import Server
from common import median_report

from microfactory.cli.ports import free_port
from microfactory.gateway.adapters.opcua.certificates import create_certificate
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway

NS = "urn:bench:opcua"
SERVER_URI = "urn:bench:opcua:server"
SECURITY = {
    "none": ("None", "None", [ua.SecurityPolicyType.NoSecurity]),
    "sign": ("Basic256Sha256", "Sign", [ua.SecurityPolicyType.Basic256Sha256_Sign]),
    "sign-encrypt": (
        "Basic256Sha256",
        "SignAndEncrypt",
        [ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt],
    ),
}


async def _serve(
    port: int,
    nodes: int,
    hz: float,
    security: str,
    pki: Path,
    go: MpEvent,
    stop: MpEvent,
    written: Synchronized[int],
) -> None:
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench")
    server.set_security_policy(SECURITY[security][2])
    if security != "none":
        cert, key = create_certificate(
            pki, application_uri=SERVER_URI, host="127.0.0.1", server=True
        )
        await server.set_application_uri(SERVER_URI)
        await server.load_certificate(str(cert))
        await server.load_private_key(str(key))
    idx = await server.register_namespace(NS)
    obj = await server.nodes.objects.add_object(idx, "Bench")
    variables = [
        await obj.add_variable(ua.NodeId(ua.String(f"v{i}"), ua.Int16(idx)), f"v{i}", 0.0)
        for i in range(nodes)
    ]
    await server.start()
    try:
        await asyncio.to_thread(go.wait, 600)  # the gateway is connected: start writing
        t0 = time.monotonic()
        tick = 0
        while not stop.is_set():
            tick += 1
            for v in variables:
                await server.write_attribute_value(
                    v.nodeid, ua.DataValue(ua.Variant(float(tick), ua.VariantType.Double))
                )
            with written.get_lock():
                written.value += nodes
            delay = t0 + tick / hz - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
    finally:
        await server.stop()


def _server_process(
    port: int,
    nodes: int,
    hz: float,
    security: str,
    pki: Path,
    go: MpEvent,
    stop: MpEvent,
    written: Synchronized[int],
) -> None:
    asyncio.run(_serve(port, nodes, hz, security, pki, go, stop, written))


async def run_once(
    nodes: int, hz: float, duration: float, security: str
) -> tuple[float, float, float]:
    port = free_port()
    go, stop = mp.Event(), mp.Event()
    written: Synchronized[int] = mp.Value("q", 0)
    tmp = Path(tempfile.mkdtemp(prefix="bench-opcua-"))
    server = mp.Process(
        target=_server_process,
        args=(port, nodes, hz, security, tmp / "server-pki", go, stop, written),
    )
    server.start()
    policy, mode, _ = SECURITY[security]
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
                    "security_policy": policy,
                    "security_mode": mode,
                    "allow_insecure": security == "none",
                    "trust_on_first_use": True,
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
        for _ in range(600):  # bounded wait for the server and the session
            if gw.health.connections.get("bench") == "connected":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        r0 = gw.health.received
        cpu0 = _cpu_s()
        t0 = time.monotonic()
        go.set()
        await asyncio.sleep(duration)
        stop.set()
        elapsed = time.monotonic() - t0
        await asyncio.sleep(1.0)  # the last publish cycles
        taken = gw.health.received - r0
        cpu = _cpu_s() - cpu0
    finally:
        stop.set()
        await gw.stop(timeout_s=10)
        server.join(30)
    return written.value / elapsed, taken / elapsed, cpu / elapsed


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--hz", type=float, default=50)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--security", choices=sorted(SECURITY), default="none")
    args = ap.parse_args()
    offered, taken, cores = [], [], []
    for i in range(args.runs):
        o, t, c = asyncio.run(run_once(args.nodes, args.hz, args.duration, args.security))
        print(
            f"run {i + 1}: server wrote {o:,.0f} changes/s, gateway took {t:,.0f}/s "
            f"using {c:.2f} cores",
            flush=True,
        )
        offered.append(o)
        taken.append(t)
        cores.append(c)
    median_report("offered", offered, "data changes/s")
    median_report("taken by the gateway", taken, "data changes/s")
    median_report("gateway CPU", cores, "cores")


if __name__ == "__main__":
    main()
