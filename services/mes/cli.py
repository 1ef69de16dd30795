"""``microfactory mes``: run the MES-lite, seed demo data, create users."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from microfactory.mes.settings import MesSettings

app = typer.Typer(help="The MES-lite: orders, batches, traceability, energy per part.")

DbUrl = Annotated[
    str | None,
    typer.Option(
        "--db-url",
        help="sqlite:///path or postgresql://user:pass@host/db (env MICROFACTORY_MES__DB_URL)",
    ),
]


def _settings(**overrides: object) -> MesSettings:
    """Settings from the environment, with the options given on the command line on top."""
    from pydantic import ValidationError

    from microfactory.mes.settings import MesSettings

    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return MesSettings.model_validate(values)
    except ValidationError as err:
        # each error by field and reason, never pydantic's echo of the value (it may be a secret)
        for e in err.errors():
            where = ".".join(str(part) for part in e["loc"]) or "settings"
            typer.echo(f"MES settings: {where}: {e['msg']}", err=True)
        raise typer.Exit(2) from None


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port")] = 8081,
    db_url: DbUrl = None,
    mqtt_url: Annotated[
        str | None,
        typer.Option(help="broker for machine context and events (env MICROFACTORY_MES__MQTT_URL)"),
    ] = None,
    site: Annotated[str | None, typer.Option(help="site id, as in the gateway's config")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="seed the demo data and accept the demo passwords")
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="serve HTTPS: certificate chain, PEM (env MICROFACTORY_MES__TLS_CERT)"),
    ] = None,
    tls_key: Annotated[
        Path | None,
        typer.Option(help="serve HTTPS: private key, PEM (env MICROFACTORY_MES__TLS_KEY)"),
    ] = None,
) -> None:
    """Serve the MES API (``/api/v1``, schema at ``/openapi.json``) until Ctrl-C or SIGTERM."""
    from microfactory.mes import db
    from microfactory.mes.api.app import create_app
    from microfactory.mes.api.deps import Runtime
    from microfactory.mes.seed import seed_demo, start_demo_batches
    from microfactory.mes.server import serve_in_loop

    _logging(log_level)
    settings = _settings(
        host=host,
        port=port,
        db_url=db_url,
        mqtt_url=mqtt_url,
        site=site,
        demo=demo or None,
        tls_cert=tls_cert,
        tls_key=tls_key,
    )

    async def main() -> None:
        mes = create_app(settings)
        runtime: Runtime = mes.state.runtime
        if settings.demo:
            with db.session_scope(runtime.sessions) as session:
                seed_demo(session)
                start_demo_batches(session)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = await serve_in_loop(
            mes,
            settings.host,
            settings.port,
            log_level=log_level,
            tls_cert=settings.tls_cert,
            tls_key=settings.tls_key,
            forwarded_allow_ips=settings.forwarded_allow_ips,
        )
        typer.echo(server.url)
        await stop.wait()
        await server.stop()

    asyncio.run(main())


@app.command()
def seed(
    db_url: DbUrl = None,
    start_batches: Annotated[
        bool, typer.Option(help="also release the demo orders and start their batches")
    ] = False,
    users: Annotated[
        bool, typer.Option(help="create the demo users operator, manager, admin")
    ] = True,
) -> None:
    """Load the demo workshop's data (idempotent): machines, products, orders, lots, users."""
    from microfactory.mes import db
    from microfactory.mes.seed import seed_demo, start_demo_batches

    settings = _settings(db_url=db_url)
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    with db.session_scope(db.session_factory(engine)) as session:
        seed_demo(session, users=users)
        started = start_demo_batches(session) if start_batches else set()
    engine.dispose()
    typer.echo(
        f"demo data in {engine.url.render_as_string(hide_password=True)}"
        + (f"; batches started on {', '.join(sorted(started))}" if started else "")
    )


@app.command("create-user")
def create_user(
    username: Annotated[str, typer.Argument(help="login name")],
    role: Annotated[str, typer.Option(help="operator, manager or admin")] = "admin",
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)
    ] = "",
    db_url: DbUrl = None,
) -> None:
    """Create a user (e.g. the first admin of a real installation)."""
    from sqlalchemy import select

    from microfactory.mes import db
    from microfactory.mes.models import Role, User
    from microfactory.mes.security import password_problem
    from microfactory.mes.seed import ensure_user

    try:
        role_ = Role(role)
    except ValueError:
        typer.echo(f"role: expected operator, manager or admin, got {role!r}", err=True)
        raise typer.Exit(2) from None
    problem = password_problem(username, password)
    if problem is not None:
        typer.echo(f"password: {problem}", err=True)
        raise typer.Exit(2)
    settings = _settings(db_url=db_url)
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    with db.session_scope(db.session_factory(engine)) as session:
        existed = session.scalars(select(User.id).where(User.username == username)).first()
        user = ensure_user(session, username, password, role_)
    engine.dispose()
    if existed is not None:
        typer.echo(f"user {username!r} already exists ({user.role}); nothing changed", err=True)
        raise typer.Exit(1)
    typer.echo(f"user {username!r} created ({user.role})")


@app.command()
def schemas(
    doc: Annotated[str, typer.Option(help="markdown file with the generated section")] = (
        "docs/mes.md"
    ),
    check: Annotated[bool, typer.Option(help="exit 1 if the file is out of date")] = False,
) -> None:
    """Write the wire contract's JSON Schemas (context, events) into the integrator docs."""

    from microfactory.mes import wire_docs

    path = Path(doc)
    if check:
        text = path.read_text(encoding="utf-8")
        current = text[text.index(wire_docs.BEGIN) : text.index(wire_docs.END) + len(wire_docs.END)]
        if current != wire_docs.render():
            typer.echo(f"{doc}: JSON Schemas out of date; run `microfactory mes schemas`", err=True)
            raise typer.Exit(1)
        return
    typer.echo(f"{doc}: {'updated' if wire_docs.update(path) else 'already up to date'}")
