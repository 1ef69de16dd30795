"""``microfactory demo``: the whole micro-factory on one machine with embedded defaults.

Simulated machines (real OPC UA servers and MQTT publishers), an embedded MQTT broker unless
one is configured, the gateway with its spool and local history (and InfluxDB when
configured), the MES, and a live terminal view. Environment overrides
(``MICROFACTORY_MQTT__URL``, ``MICROFACTORY_INFLUXDB__*``) apply as they do to the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import string
import sys
import time
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.live import Live
from rich.table import Table

from microfactory.gateway.config import SiteConfig, parse_site_config
from microfactory.gateway.errors import ConfigError
from microfactory.gateway.runtime import Gateway
from microfactory.mqtt.settings import redact_url

from .embedded_broker import EmbeddedBroker
from .ports import free_port, port_is_free

if TYPE_CHECKING:
    from microfactory.sim.workshop import Workshop

log = logging.getLogger(__name__)
STATE_STYLE = {
    "running": "green",
    "idle": "yellow",
    "setup": "cyan",
    "fault": "bold red",
    "off": "dim",
}


@dataclass
class DemoOptions:
    duration_s: float | None = None
    speed: float = 1.0
    seed: int = 42
    data_dir: Path = Path("data/demo")
    mqtt_url: str | None = None
    influxdb_url: str | None = None
    influxdb_api: str | None = None
    mes_port: int = 8080


def demo_site_config(
    mqtt_url: str, endpoints: dict[str, str], data_dir: Path, meter_port: int = 5020
) -> dict[str, Any]:
    """The demo's site config for simulators at these addresses (``meter_port``: assembly-1's
    Modbus meter)."""
    template = string.Template(files("microfactory.cli").joinpath("demo_site.yaml").read_text())
    text = template.substitute(
        MQTT_URL=mqtt_url,
        MILL_ENDPOINT=endpoints["mill-1"],
        LASER_ENDPOINT=endpoints["laser-1"],
        ASSEMBLY_METER_PORT=str(meter_port),
        DATA_DIR=str(data_dir),
    )
    data: dict[str, Any] = yaml.safe_load(text)
    return data


def _meter_port(workshop: Workshop) -> int:
    """The TCP port of the simulated Modbus meter on assembly-1 (the demo config reads it)."""
    _model, port, _unit = workshop.modbus_meters["assembly-1"]
    return port


def _apply_options(data: dict[str, Any], options: DemoOptions) -> None:
    """Command-line flags act like environment overrides (which still win over the file)."""
    if options.influxdb_url or options.influxdb_api:
        influx = data.setdefault("influxdb", {})
        if options.influxdb_url:
            influx["url"] = options.influxdb_url
        if options.influxdb_api:
            influx["api"] = options.influxdb_api
        influx.setdefault("database", "microfactory")
        influx.setdefault("org", "microfactory")
        influx.setdefault("bucket", "microfactory")
    if os.environ.get("MICROFACTORY_INFLUXDB__URL") and "influxdb" not in data:
        # Defaults that make a bare URL usable; the environment still overrides each of them.
        data["influxdb"] = {
            "url": os.environ["MICROFACTORY_INFLUXDB__URL"],
            "database": "microfactory",
            "org": "microfactory",
            "bucket": "microfactory",
        }
    # The demo keeps its local history even when InfluxDB is configured: the live view and
    # the MES read it.
    data.setdefault("local_history", {})["enabled"] = True


def _view(gw: Gateway, rate: float, started: float) -> Table:
    table = Table(
        title=f"microfactory demo — site {gw.site.site} — {time.monotonic() - started:.0f} s"
    )
    for col in ("machine", "state", "power W", "parts", "good / scrap", "energy kWh", "program"):
        table.add_column(col)
    last = gw.pipeline.last if gw.pipeline else {}

    def val(machine: str, signal: str) -> Any:
        lv = last.get((machine, signal))
        return None if lv is None else lv.value

    for m in gw.site.machines:
        state = val(m.id, "state")
        power = val(m.id, "power_active")
        energy = val(m.id, "energy_active")
        good, scrap = val(m.id, "good_count"), val(m.id, "scrap_count")
        table.add_row(
            m.id,
            f"[{STATE_STYLE.get(str(state), 'white')}]{state or '—'}[/]",
            f"{power:,.0f}" if isinstance(power, float) else "—",
            f"{val(m.id, 'part_count'):.0f}" if isinstance(val(m.id, "part_count"), float) else "—",
            f"{good:.0f} / {scrap:.0f}"
            if isinstance(good, float) and isinstance(scrap, float)
            else "—",
            f"{energy / 1000:,.3f}" if isinstance(energy, float) else "—",
            str(val(m.id, "program") or "—"),
        )
    h = gw.health
    conns = ", ".join(f"{k}: {v}" for k, v in sorted(h.connections.items()))
    delivered = ", ".join(f"{k} {v:,}" for k, v in sorted(h.delivered.items()))
    table.caption = (
        f"{rate:,.0f} samples/s · received {h.received:,} · delivered {delivered or '0'} · "
        f"dead letters {sum(h.dead_lettered.values())}\n{conns}"
    )
    return table


async def run_demo(options: DemoOptions) -> int:
    from microfactory.sim.workshop import ModbusMeterSettings, Workshop, WorkshopSettings

    console = Console()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)

    mqtt_url = options.mqtt_url or os.environ.get("MICROFACTORY_MQTT__URL")
    broker: EmbeddedBroker | None = None
    if not mqtt_url:
        port = 1883 if port_is_free(1883) else free_port()
        broker = EmbeddedBroker("127.0.0.1", port)
        await broker.start()
        mqtt_url = broker.url
    # the ground truth describes this run only (history and MES data carry over between runs)
    truth_dir = data_dir / "truth"
    shutil.rmtree(truth_dir, ignore_errors=True)
    workshop = Workshop(
        WorkshopSettings(
            seed=options.seed,
            speed=options.speed,
            mqtt_url=mqtt_url,
            opcua_ports={"mill-1": 0, "laser-1": 0},
            modbus_meters=[ModbusMeterSettings(port=5020 if port_is_free(5020) else 0)],
            truth_dir=truth_dir,
            pki_dir=data_dir / "simulators" / "pki",  # the gateway trusts them across runs
        )
    )
    gw: Gateway | None = None
    mes: Any = None
    try:
        # servers first, clock last: the gateway and the MES see the machines from their first
        # simulated second on, so the ground truth and the stored data describe the same run
        await workshop.start(paused=True)
        data = demo_site_config(mqtt_url, workshop.opcua_endpoints, data_dir, _meter_port(workshop))
        _apply_options(data, options)
        try:
            site: SiteConfig = parse_site_config(data, "demo site config")
        except ConfigError as err:
            console.print(f"[red]{err}[/]")
            return 2
        # the gateway lives in the simulated world: receive times are simulated instants
        gw = Gateway(site, clock=workshop.now_ns)
        await gw.start()
        mes = await _start_mes(options, site, mqtt_url, data_dir, console)
        await _wait_connected(gw, timeout_s=15.0)
        await workshop.resume()
        console.print(f"MQTT broker: {redact_url(mqtt_url)}{' (embedded)' if broker else ''}")
        for machine, endpoint in workshop.opcua_endpoints.items():
            console.print(f"OPC UA {machine}: {endpoint}")
        for machine, (model, port, unit) in workshop.modbus_meters.items():
            console.print(f"Modbus meter of {machine}: {model} at 127.0.0.1:{port} unit {unit}")
        sinks = ", ".join(s.name for s in gw.sinks)
        console.print(f"gateway sinks: {sinks}; data in {data_dir}")
        console.print(
            "Ctrl-C stops." if options.duration_s is None else f"running {options.duration_s:g} s"
        )
        await _live(gw, stop, options.duration_s, console)
    finally:
        if mes is not None:
            with contextlib.suppress(Exception):
                await mes.stop()
        if gw is not None:
            await gw.stop(10.0)
        await workshop.stop()
        if broker is not None:
            await broker.stop()
    if gw is not None:
        stored = sorted({m for (m, _s) in (gw.pipeline.last if gw.pipeline else {})})
        console.print(
            f"stored data from {len(stored)} machines ({', '.join(stored)}); "
            f"{gw.health.spooled:,} samples spooled, delivered {dict(gw.health.delivered)}"
        )
    return 0


async def _wait_connected(gw: Gateway, timeout_s: float) -> None:
    """Give the adapters a moment to connect; a slow one only misses the first seconds."""
    names = [a.name for a in gw.site.adapters]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if all(gw.health.connections.get(n) == "connected" for n in names):
            await asyncio.sleep(0.3)  # let the broker settle the subscriptions
            return
        await asyncio.sleep(0.05)
    log.warning("not every adapter connected within %.0f s; starting anyway", timeout_s)


async def _start_mes(
    options: DemoOptions, site: SiteConfig, mqtt_url: str, data_dir: Path, console: Console
) -> Any:
    """Start the MES in-process when it is installed; print its base URL on a line of its own."""
    try:
        from microfactory.mes.demo import start_demo_mes
    except ImportError:
        return None
    port = options.mes_port if options.mes_port and port_is_free(options.mes_port) else free_port()
    mes = await start_demo_mes(
        host="127.0.0.1", port=port, mqtt_url=mqtt_url, site=site.site, data_dir=data_dir
    )
    print(f"http://127.0.0.1:{port}", flush=True)
    console.print(
        f"Operator UI: http://127.0.0.1:{port}/ — log in as operator/operator or manager/manager"
        f"\nMES API: http://127.0.0.1:{port}/api/v1 (also admin/admin; schema at /openapi.json)"
    )
    return mes


async def _live(
    gw: Gateway, stop: asyncio.Event, duration_s: float | None, console: Console
) -> None:
    started = time.monotonic()
    deadline = None if duration_s is None else started + duration_s
    last_count, last_t = gw.health.received, started
    rate = 0.0
    interactive = sys.stdout.isatty()
    with (
        Live(_view(gw, rate, started), console=console, refresh_per_second=2, transient=False)
        if interactive
        else contextlib.nullcontext() as live
    ):
        next_print = started + 5
        while not stop.is_set():
            timeout = 1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout)
            now = time.monotonic()
            rate = (gw.health.received - last_count) / max(1e-6, now - last_t)
            last_count, last_t = gw.health.received, now
            if live is not None:
                live.update(_view(gw, rate, started))
            elif now >= next_print:
                next_print = now + 5
                console.print(_view(gw, rate, started))
            if deadline is not None and now >= deadline:
                break
