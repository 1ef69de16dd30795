"""``microfactory sim``: run the simulated workshop on its own (real OPC UA servers, real MQTT).

``microfactory sim run --speed 60 --duration 300 --mqtt-url mqtt://127.0.0.1:1883`` starts
the five machines, prints where each one can be reached, runs for the given wall time (or
until Ctrl-C / SIGTERM) and exits 0 after writing the ground truth when ``--truth-dir`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from .workshop import WorkshopSettings

app = typer.Typer(
    help="The simulated workshop: OPC UA and MQTT machines, a Modbus meter.", no_args_is_help=True
)

DEFAULT_OPCUA_PORTS = ("mill-1=4840", "laser-1=4841")


def parse_port_options(values: list[str]) -> dict[str, int]:
    """Turn ``["mill-1=4840", "laser-1=0"]`` into a port map; names what is wrong otherwise."""
    ports: dict[str, int] = {}
    for item in values:
        machine, sep, port_text = item.partition("=")
        if not sep or not machine:
            raise typer.BadParameter(f"{item!r}: expected MACHINE=PORT, e.g. mill-1=4840")
        try:
            port = int(port_text)
        except ValueError:
            raise typer.BadParameter(f"{item!r}: port {port_text!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise typer.BadParameter(f"{item!r}: port must be 0..65535 (0 = a free one)")
        ports[machine] = port
    return ports


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("asyncua").setLevel(logging.WARNING)
    # the simulators run without security on purpose; asyncua warns about it on every start
    logging.getLogger("asyncua.server.server").setLevel(logging.ERROR)


@app.command()
def run(
    seed: Annotated[int, typer.Option(help="same seed (and --start-ns) = same run")] = 42,
    speed: Annotated[
        float, typer.Option(min=0.001, help="simulated seconds per wall second")
    ] = 1.0,
    duration: Annotated[
        float | None, typer.Option(help="wall seconds to run, then exit 0 (default: until Ctrl-C)")
    ] = None,
    mqtt_url: Annotated[
        str,
        typer.Option(
            help="broker for the MQTT machines, mqtt://[user[:pw]@]host[:port]; 'none' = off"
        ),
    ] = "mqtt://127.0.0.1:1883",
    opcua_host: Annotated[
        str, typer.Option(help="address the OPC UA servers bind to")
    ] = "127.0.0.1",
    opcua_port: Annotated[
        list[str] | None,
        typer.Option(
            help="MACHINE=PORT, repeatable; 0 = a free port [default: mill-1=4840 laser-1=4841]"
        ),
    ] = None,
    modbus_port: Annotated[
        int,
        typer.Option(
            min=0, max=65535, help="TCP port of assembly-1's Modbus energy meter; 0 = a free one"
        ),
    ] = 5020,
    truth_dir: Annotated[
        Path | None, typer.Option(help="write the ground truth (parts, states, published) here")
    ] = None,
    power_loss_probability: Annotated[
        float, typer.Option(min=0.0, help="power losses per machine per simulated hour")
    ] = 0.01,
    start_ns: Annotated[
        int | None, typer.Option(help="simulated origin, UTC ns (default: now)")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "warning",
) -> None:
    """Run the simulated machines; print their OPC UA endpoints, MQTT topics, Modbus meter."""
    # imported here: `microfactory` mounts this app, and every other command (the gateway's
    # above all) should not pay for asyncua's import
    from microfactory.mqtt.settings import check_mqtt_url

    from .workshop import ModbusMeterSettings, WorkshopSettings

    _setup_logging(log_level)
    url: str | None = None if mqtt_url.strip().lower() in ("", "none", "off") else mqtt_url
    if url is not None:
        try:
            check_mqtt_url(url)
        except ValueError as err:
            raise typer.BadParameter(str(err), param_hint="--mqtt-url") from err
    ports = parse_port_options(list(DEFAULT_OPCUA_PORTS))
    ports.update(parse_port_options(opcua_port or []))
    settings = WorkshopSettings(
        seed=seed,
        speed=speed,
        mqtt_url=url,
        opcua_host=opcua_host,
        opcua_ports=ports,
        modbus_meters=[ModbusMeterSettings(port=modbus_port)],
        truth_dir=truth_dir,
        power_loss_probability=power_loss_probability,
        start_ns=start_ns,
    )
    try:
        asyncio.run(_run(settings, duration))
    except OSError as err:  # e.g. an OPC UA port already in use
        typer.echo(f"simulator could not start: {err}", err=True)
        raise typer.Exit(1) from err


async def _run(settings: WorkshopSettings, duration_s: float | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    from .workshop import Workshop

    workshop = Workshop(settings)
    await workshop.start(paused=True)
    try:
        for info in workshop.machines:
            if info.protocol == "opcua":
                srv = workshop.opcua_server(info.machine_id)
                typer.echo(
                    f"{info.machine_id:<11} {info.kind:<17} OPC UA {info.address}  "
                    f"namespace {srv.namespace_uri}"
                )
            elif settings.mqtt_url is not None:
                typer.echo(f"{info.machine_id:<11} {info.kind:<17} MQTT   {info.address}")
            if info.meter is not None:
                typer.echo(f"{'':<11} {'':<17} Modbus {info.meter} (its energy meter)")
        typer.echo(f"MQTT broker: {settings.mqtt_url or 'off (MQTT machines silent)'}")
        if settings.truth_dir is not None:
            typer.echo(f"ground truth: {settings.truth_dir}")
        await workshop.resume()
        typer.echo(
            f"running: seed {settings.seed}, speed x{settings.speed:g}, "
            + ("until Ctrl-C" if duration_s is None else f"for {duration_s:g} s")
        )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration_s)
    finally:
        await workshop.stop()
    summary = workshop.summary()
    parts = sum(m.get("part_count", 0) for m in summary["machines"].values())
    typer.echo(f"stopped: {parts} parts made")
