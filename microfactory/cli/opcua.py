"""``microfactory opcua``: a client certificate, and a server browsed into a site config.

The OPC UA modules import asyncua, which only the gateway extra installs and which the CLI
layer may not import itself: both commands import them when they run, so ``microfactory
--help`` works in every install and the import-linter contract holds.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated

import typer

PASSWORD_ENV = "MICROFACTORY_OPCUA_PASSWORD"  # same as snippet.PASSWORD_ENV (a test checks)

app = typer.Typer(
    help="OPC UA tools: a client certificate, a server browsed into a site config.",
    no_args_is_help=True,
)


@app.command("cert")
def cert(
    out: Annotated[Path, typer.Option("--out", help="folder for cert.der and key.pem")],
    application_uri: Annotated[
        str | None,
        typer.Option(help="URI in subjectAltName; default urn:<host>:microfactory:gateway"),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="DNS name in subjectAltName; default this host's name")
    ] = None,
    force: Annotated[
        bool, typer.Option(help="replace existing files (machines trusting them must re-trust)")
    ] = False,
) -> None:
    """Make an application-instance certificate for the gateway (key readable by you only)."""
    from microfactory.gateway.adapters.opcua.certificates import (
        CERT_FILE,
        KEY_FILE,
        application_uri_of,
        create_certificate,
        load_certificate,
        thumbprint,
    )

    existing = [p for p in (out / CERT_FILE, out / KEY_FILE) if p.exists()]
    if existing and not force:
        typer.echo(
            f"{existing[0]} exists; a new certificate must be trusted again on every machine. "
            "Pass --force to replace it.",
            err=True,
        )
        raise typer.Exit(1)
    cert_path, key_path = create_certificate(out, application_uri=application_uri, host=host)
    made = load_certificate(cert_path)
    typer.echo(f"certificate: {cert_path}")
    typer.echo(f"private key: {key_path}")
    typer.echo(f"application URI: {application_uri_of(made)}")
    typer.echo(f"SHA-1 thumbprint: {thumbprint(made)}")
    typer.echo("Trust the certificate on each machine (its OPC UA server's trusted folder).")


@app.command("browse")
def browse(
    url: Annotated[
        str, typer.Argument(help="opc.tcp://HOST:PORT, with the path if the server has one")
    ],
    out: Annotated[Path, typer.Option("--out", help="site config YAML to write")],
    security_policy: Annotated[
        str,
        typer.Option(help="Basic256Sha256, Aes128Sha256RsaOaep, Aes256Sha256RsaPss or None"),
    ] = "Basic256Sha256",
    security_mode: Annotated[
        str | None,
        typer.Option(help="SignAndEncrypt, Sign or None; default None only with policy None"),
    ] = None,
    allow_insecure: Annotated[
        bool, typer.Option(help="allow policy None (clear text); written into the config")
    ] = False,
    certificate: Annotated[
        Path | None, typer.Option(help="client certificate; default made in the state dir")
    ] = None,
    private_key: Annotated[Path | None, typer.Option(help="its private key (PEM)")] = None,
    application_uri: Annotated[str | None, typer.Option(help="client application URI")] = None,
    trust_dir: Annotated[
        Path | None,
        typer.Option(help="trusted server certificates; default <state dir>/opcua/trusted"),
    ] = None,
    trust_on_first_use: Annotated[
        bool, typer.Option(help="trust the server certificate seen now, and store it")
    ] = False,
    username: Annotated[str | None, typer.Option(help="user name token")] = None,
    password: Annotated[
        str | None,
        typer.Option(envvar=PASSWORD_ENV, help=f"password of --username (env {PASSWORD_ENV})"),
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="client certificate and trust list; default the gateway's data/adapters/<adapter>"
        ),
    ] = None,
    machine: Annotated[
        str | None,
        typer.Option(help="machine id; default from the server's application name"),
    ] = None,
    site: Annotated[str, typer.Option(help="site id written into the config")] = "workshop",
    depth: Annotated[int, typer.Option(min=1, help="levels below Objects")] = 8,
    max_nodes: Annotated[int, typer.Option(min=1, help="stop the walk after this many")] = 2000,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds per request")] = 5.0,
    force: Annotated[bool, typer.Option(help="overwrite --out if it exists")] = False,
) -> None:
    """Walk a server's address space: print the tree, write a site config that reads it."""
    from pydantic import ValidationError

    from microfactory.gateway.adapters.opcua import browse as b
    from microfactory.gateway.adapters.opcua import snippet
    from microfactory.gateway.adapters.opcua.config import OpcUaAdapterConfig
    from microfactory.gateway.adapters.opcua.connect import ConnectError

    from .main import setup_logging

    setup_logging("warning")
    if out.exists() and not force:
        typer.echo(f"{out} exists; pass --force to overwrite it", err=True)
        raise typer.Exit(1)
    mode = security_mode or ("None" if security_policy == "None" else "SignAndEncrypt")

    def config(machine_id: str) -> OpcUaAdapterConfig:
        try:
            return OpcUaAdapterConfig.model_validate(
                {
                    "name": f"{machine_id}-opcua",
                    "machine": machine_id,
                    "endpoint": url,
                    "security_policy": security_policy,
                    "security_mode": mode,
                    "allow_insecure": allow_insecure,
                    "certificate": certificate,
                    "private_key": private_key,
                    "application_uri": application_uri,
                    "trust_dir": trust_dir,
                    "trust_on_first_use": trust_on_first_use,
                    "username": username,
                    "password": password,
                    "timeout_s": timeout,
                    "companion": "auto",  # connects with no nodes listed
                }
            )
        except ValidationError as err:
            for e in err.errors(include_url=False):
                where = ".".join(str(p) for p in e["loc"])
                msg = str(e["msg"]).removeprefix("Value error, ")
                typer.echo(f"{where + ': ' if where else ''}{msg}", err=True)
            raise typer.Exit(2) from err

    probe = config(machine or "machine")  # refuses credentials in the URL
    log = logging.getLogger("microfactory.opcua.browse")

    async def run() -> tuple[b.BrowseResult, OpcUaAdapterConfig, Path]:
        machine_id = machine
        if machine_id is None:
            name, _uri = await b.application_name(probe)
            machine_id = snippet.machine_id_from(name)
        cfg = config(machine_id)
        state = state_dir or Path("data") / "adapters" / cfg.name
        result = await b.browse_server(
            cfg, state_dir=state, max_depth=depth, max_nodes=max_nodes, log=log
        )
        return result, cfg, state

    try:
        result, cfg, state = asyncio.run(run())
    except ConnectError as err:
        typer.echo(f"cannot browse {url}: {err}", err=True)
        raise typer.Exit(1) from err
    except b.BrowseError as err:
        typer.echo(f"cannot browse {url}: {err}", err=True)
        raise typer.Exit(1) from err
    except (OSError, TimeoutError) as err:
        typer.echo(f"cannot reach {url}: {err or type(err).__name__}", err=True)
        raise typer.Exit(1) from err
    for line in snippet.render_tree(result.nodes):
        typer.echo(line)
    cert_paths: tuple[Path, Path] | None = None
    trusted: Path | None = None
    if cfg.secure:
        cert_file, key_file, trusted = b.identity_paths(cfg, state)
        cert_paths = (cert_file, key_file)
    text = snippet.build_site_config(
        result,
        cfg,
        out=out,
        machine=cfg.machine,
        site=site,
        trust_dir=trusted,
        certificate=cert_paths,
        password_given=password is not None,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    variables = sum(1 for n in result.nodes if n.node_class == "Variable")
    typer.echo(
        f"wrote {out}: machine {cfg.machine}, {variables} variables"
        + (f", {len(result.companion)} companion mappings" if result.companion else "")
        + (" (walk stopped at --max-nodes)" if result.truncated else ""),
        err=True,
    )
    if password is not None:
        typer.echo(
            f"set {PASSWORD_ENV} in the gateway's environment: the config names it", err=True
        )
