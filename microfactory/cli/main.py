"""The ``microfactory`` command: gateway, config check, simulators, MES and the demo."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from .backup import backup as backup_command
from .backup import restore as restore_command
from .broker import app as broker_app
from .doctor import doctor as doctor_command
from .extras import missing_for, require

app = typer.Typer(
    help="Shop-floor data collector and MES-lite for small workshops.", no_args_is_help=True
)
config_app = typer.Typer(help="Site config tools.", no_args_is_help=True)
app.add_typer(config_app, name="config")
app.add_typer(broker_app, name="broker")
app.command("backup")(backup_command)
app.command("restore")(restore_command)
app.command("doctor")(doctor_command)


# Libraries whose every line is demoted to DEBUG: their warnings and tracebacks repeat what
# our own state-change lines already say once (a powered-off machine, a stopped server),
# and an SD card cannot take a traceback every 10 s for months.
NOISY_LIBRARIES = ("asyncua", "amqtt", "httpx", "httpcore", "transitions", "paho", "pymodbus")


class DemoteLibraries(logging.Filter):
    """Shows library records as DEBUG, and only when the log level is DEBUG."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self._level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.partition(".")[0] not in NOISY_LIBRARIES:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self._level <= logging.DEBUG


def setup_logging(level: str) -> None:
    numeric = getattr(logging, level.upper(), logging.INFO)
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(DemoteLibraries(numeric))
    if numeric > logging.DEBUG:  # spare the formatting of records that would be dropped
        for name in NOISY_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)


LogLevel = Annotated[str, typer.Option("--log-level", help="debug, info, warning, error")]


@config_app.command("check")
def config_check(file: Annotated[Path, typer.Argument(help="site config YAML")]) -> None:
    """Validate a site config (with environment overrides applied) without connecting."""
    require("gateway", "the gateway", "config check")
    from microfactory.gateway.config import load_site_config
    from microfactory.gateway.errors import ConfigError

    try:
        site = load_site_config(file)
    except ConfigError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    sinks = []
    if site.influxdb:
        sinks.append(f"influxdb {site.influxdb.api} {site.influxdb.url}")
    if site.history_enabled:
        sinks.append(f"local history {site.local_history.path}")
    typer.echo(
        f"{file}: OK — site {site.site}, {len(site.machines)} machines, "
        f"{len(site.adapters)} adapters, sinks: {', '.join(sinks) or 'none'}"
    )


@app.command()
def gateway(
    config: Annotated[Path, typer.Option("--config", "-c", help="site config YAML")],
    stop_timeout: Annotated[float, typer.Option(help="seconds to flush sinks on SIGTERM")] = 10.0,
    log_level: LogLevel = "info",
) -> None:
    """Run the gateway until SIGTERM or Ctrl-C."""
    require("gateway", "the gateway", "gateway")
    from microfactory.gateway.config import load_site_config
    from microfactory.gateway.errors import ConfigError
    from microfactory.gateway.runtime import Gateway

    setup_logging(log_level)
    try:
        site = load_site_config(config)
    except ConfigError as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err

    async def main() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gw = Gateway(site)
        await gw.start()
        waits = [asyncio.create_task(stop.wait()), asyncio.create_task(gw.failed.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        await gw.stop(stop_timeout)
        return gw.failed.is_set()

    if asyncio.run(main()):  # a task kept failing: exit non-zero, systemd restarts us
        from microfactory.gateway.runtime import EXIT_TASKS_FAILING

        raise typer.Exit(EXIT_TASKS_FAILING)


@app.command()
def status(
    config: Annotated[
        Path | None, typer.Option("--config", "-c", help="site config: health.host/port")
    ] = None,
    url: Annotated[
        str | None, typer.Option(help="metrics URL, e.g. http://HOST:PORT/metrics")
    ] = None,
) -> None:
    """Show a running gateway's counters: pipeline, sinks (depth, drops), adapters."""
    require("gateway", "the gateway", "status")
    from rich.console import Console

    from microfactory.gateway.status import fetch, render

    if url is None:
        if config is None:
            raise typer.BadParameter("give --url or --config")
        from microfactory.gateway.config import load_site_config

        health = load_site_config(config).health
        url = f"http://{health.host}:{health.port}/metrics"
    try:
        values = fetch(url)
    except OSError as err:
        typer.echo(f"cannot read {url}: {err}", err=True)
        raise typer.Exit(1) from err
    render(values, Console())


@app.command()
def demo(
    duration: Annotated[
        float | None, typer.Option(help="run this many seconds, then exit 0")
    ] = None,
    speed: Annotated[float, typer.Option(help="simulated time per wall second")] = 1.0,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 42,
    data_dir: Annotated[Path, typer.Option(help="where spool, history and MES data live")] = Path(
        "data/demo"
    ),
    mqtt_url: Annotated[
        str | None,
        typer.Option(
            help="use this broker instead of the embedded one (env MICROFACTORY_MQTT__URL)"
        ),
    ] = None,
    influxdb_url: Annotated[
        str | None,
        typer.Option(help="also store in this InfluxDB (env MICROFACTORY_INFLUXDB__URL)"),
    ] = None,
    influxdb_api: Annotated[
        str | None, typer.Option(help="v1 or v2 (env MICROFACTORY_INFLUXDB__API)")
    ] = None,
    mes_port: Annotated[int, typer.Option(help="MES HTTP port (0: a free one)")] = 8080,
    log_level: LogLevel = "warning",
) -> None:
    """The whole micro-factory on embedded defaults: simulated machines, broker, gateway, store."""
    require("all", "every program and the embedded broker", "demo")
    from .demo import DemoOptions, run_demo

    setup_logging(log_level)
    options = DemoOptions(
        duration_s=duration,
        speed=speed,
        seed=seed,
        data_dir=data_dir,
        mqtt_url=mqtt_url,
        influxdb_url=influxdb_url,
        influxdb_api=influxdb_api,
        mes_port=mes_port,
    )
    code = asyncio.run(run_demo(options))
    raise typer.Exit(code)


def _missing_program(name: str, extra: str, what: str, help_text: str) -> None:
    """Stand in for a program this install lacks: any ``microfactory NAME ...`` says so, exit 2."""

    @app.command(
        name,
        help=f"{help_text} Not installed here: needs the {extra} extra.",
        context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
        add_help_option=False,
    )
    def missing(ctx: typer.Context) -> None:
        require(extra, what, " ".join([name, *ctx.args]))


def _mount_optional() -> None:
    """Mount the MES and simulator commands, or a stand-in naming the extra to install."""
    sim_help = "Run the simulated workshop."
    if missing_for("sim"):
        _missing_program("sim", "sim", "the simulators", sim_help)
    else:
        from microfactory.sim.cli import app as sim_app

        app.add_typer(sim_app, name="sim", help=sim_help)
    mes_help = "Run the MES-lite service."
    if missing_for("mes"):
        _missing_program("mes", "mes", "the MES", mes_help)
    else:
        from microfactory.mes.cli import app as mes_app

        app.add_typer(mes_app, name="mes", help=mes_help)
    opcua_help = "OPC UA tools: a client certificate, a server browsed into a site config."
    if missing_for("gateway"):
        _missing_program("opcua", "gateway", "the OPC UA adapter", opcua_help)
    else:
        from .opcua import app as opcua_app

        app.add_typer(opcua_app, name="opcua", help=opcua_help)


_mount_optional()
