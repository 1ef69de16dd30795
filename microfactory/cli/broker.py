"""``microfactory broker config``: Mosquitto users, ACL and config from the site config.

The gateway modules are imported when the command runs, so ``microfactory --help`` works in
an install without the gateway extra.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .extras import require

app = typer.Typer(help="The site's MQTT broker: users, ACL and config.", no_args_is_help=True)

QUEUE_HELP = (
    "hours of machine events the broker queues for the MES while it is away (sets "
    "max_queued_messages = machines x 240 events/h x hours, and max_queued_bytes = 2 KiB "
    "each); default: the spool's max_age_s (7 days unless configured)"
)


@app.command("config")
def config(
    site_file: Annotated[Path, typer.Option("--config", "-c", help="site config YAML")],
    out: Annotated[Path, typer.Option("--out", help="folder for the generated files")],
    listen: Annotated[
        str | None,
        typer.Option(help="plain listener HOST:PORT; default: host and port of mqtt.url"),
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="broker certificate (PEM): adds a TLS listener")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="private key of --tls-cert (PEM)")] = None,
    tls_ca: Annotated[
        Path | None, typer.Option(help="CA (PEM) that signs client certificates")
    ] = None,
    tls_listen: Annotated[
        str | None,
        typer.Option(help="TLS listener HOST:PORT; default: mqtt.url if mqtts://, else :8883"),
    ] = None,
    require_client_cert: Annotated[
        bool,
        typer.Option(
            "--require-client-cert", help="TLS clients must show a certificate signed by --tls-ca"
        ),
    ] = False,
    data_dir: Annotated[
        Path, typer.Option(help="Mosquitto's persistence folder (sessions, queued messages)")
    ] = Path("/var/lib/mosquitto"),
    run_as_user: Annotated[
        str | None,
        typer.Option(help="user Mosquitto changes to when started as root (its `user` line)"),
    ] = None,
    queue_hours: Annotated[float | None, typer.Option(help=QUEUE_HELP, min=0.1)] = None,
    max_inflight: Annotated[
        int, typer.Option(help="max_inflight_messages: unacknowledged QoS 1 per client", min=1)
    ] = 1000,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="new passwords for every user (programs and devices)")
    ] = False,
) -> None:
    """Write mosquitto.conf, passwd, acl and each program's login into --out.

    Every program and device is its own broker user; client ids are bound to usernames; a
    topic not granted in the ACL is denied. Re-running keeps the passwords unless --rotate.
    No password is printed: they are in gateway.env, mes.env and devices.csv (mode 0600).
    """
    require("gateway", "the gateway", "broker config")
    from microfactory.gateway.broker_config import (
        BrokerConfigError,
        BrokerOptions,
        IdentityError,
        parse_listener,
        write_broker_config,
    )
    from microfactory.gateway.config import load_site_config
    from microfactory.gateway.errors import ConfigError

    try:
        site = load_site_config(site_file)
        opts = BrokerOptions(
            listen=parse_listener(listen, "--listen") if listen else None,
            tls_listen=parse_listener(tls_listen, "--tls-listen") if tls_listen else None,
            tls_cert=tls_cert,
            tls_key=tls_key,
            tls_ca=tls_ca,
            require_client_cert=require_client_cert,
            data_dir=data_dir,
            run_as_user=run_as_user,
            rotate=rotate,
            queue_hours=queue_hours,
            max_inflight=max_inflight,
        )
        done = write_broker_config(site, out, opts)
    except (ConfigError, BrokerConfigError, IdentityError) as err:
        typer.echo(str(err), err=True)
        raise typer.Exit(2) from err
    except OSError as err:
        typer.echo(f"cannot write into {out}: {err}", err=True)
        raise typer.Exit(1) from err

    plan = done.plan
    typer.echo(f"broker config of site {plan.site} written to {out.resolve()}:")
    for name, path in done.files.items():
        typer.echo(f"  {name:<15} {path}")
    listeners = f"plain {done.plain}" + (f", TLS {done.tls}" if done.tls else "")
    typer.echo(f"listeners: {listeners}; anonymous clients refused")
    typer.echo(
        f"queue per session: {done.limits.max_queued_messages} messages "
        f"({done.limits.hours:g} h of events of {done.limits.machines} machines)"
    )
    typer.echo(f"users ({len(plan.identities)}):")
    for identity in sorted(plan.identities, key=lambda i: (i.program, i.username)):
        fresh = " (new password)" if identity.username in done.new_passwords else ""
        typer.echo(f"  {identity.username:<40} {identity.role}{fresh}")
    for note in done.notes:
        typer.echo(f"note: {note}")
    typer.echo(
        "next: start mosquitto -c mosquitto.conf; give the gateway gateway.env and the MES "
        "mes.env (systemd EnvironmentFile=); enter each device's login from devices.csv"
    )
