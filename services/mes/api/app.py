"""The FastAPI application factory: settings in, app out, nothing created at import time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Scope

from microfactory.mes import db, seed
from microfactory.mes.api import deps
from microfactory.mes.api.audit_middleware import MUTATING, AuditMiddleware
from microfactory.mes.api.hardening import install_http_guards
from microfactory.mes.api.limits import bounded_errors
from microfactory.mes.api.routes import catalog, operations, orders, reports, system
from microfactory.mes.api.schemas import ERROR_RESPONSES
from microfactory.mes.audit import AuditRow
from microfactory.mes.context import ContextPublisher, NullPublisher
from microfactory.mes.errors import MesError
from microfactory.mes.secret_key import resolve_secret_key
from microfactory.mes.settings import MesSettings

log = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
VERSION = "0.1.0"
HOUSEKEEPING_S = 30  # audit flood summaries, retention and capacity checks


def create_app(
    settings: MesSettings,
    *,
    publisher: ContextPublisher | None = None,
    mqtt_status: Callable[[], str] | None = None,
    start_bridge: bool = True,
) -> FastAPI:
    """Build the MES app; migrates the database, and runs the MQTT bridge if a broker is set."""
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    sessions = db.session_factory(engine)
    with db.session_scope(sessions) as session:
        seed.ensure_builtin(session)
    runtime = deps.Runtime(
        settings=settings,
        engine=engine,
        sessions=sessions,
        publisher=publisher or NullPublisher(),
        mqtt_status=mqtt_status or (lambda: "disabled"),
        secret_key=resolve_secret_key(settings),
    )
    bridge = None
    if settings.mqtt_url and start_bridge and publisher is None:
        from microfactory.mes.bridge import MqttBridge

        bridge = MqttBridge(settings, sessions)
        runtime.publisher = bridge
        runtime.mqtt_status = bridge.status

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if bridge is not None:
            bridge.start()
        try:
            yield
        finally:
            if bridge is not None:
                bridge.stop()
            engine.dispose()

    app = FastAPI(
        title="microfactory MES",
        version=VERSION,
        description=(
            "MES-lite of the micro-factory: products, orders, batches, operation runs, parts, "
            "scrap, downtime, material genealogy, OEE and energy per part. Authenticate with "
            "HTTP Basic or a bearer token from `POST /api/v1/auth/token`."
        ),
        openapi_url="/openapi.json",
        docs_url=None,  # served from the package by install_http_guards: no CDN, no inline script
        redoc_url=None,
        lifespan=lifespan,
        responses=ERROR_RESPONSES,  # every refusal documented, so clients can rely on its shape
    )
    app.state.runtime = runtime
    _install_error_handlers(app)
    _install_audit(app, runtime)
    install_http_guards(app, settings)  # body limit (413), security headers, offline /docs
    api = APIRouter(prefix=API_PREFIX)
    for module in (system, catalog, orders, operations, reports):
        api.include_router(module.router)
    app.include_router(api)
    from microfactory.mes.web import mount_web  # operator UI + live tiles (services/mes/web)

    mount_web(app, api_prefix=API_PREFIX)
    _errors_are_json_in_schema(app)
    return app


def _errors_are_json_in_schema(app: FastAPI) -> None:
    """Refusals are JSON even on an HTML route; FastAPI would document them as ``text/html``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        for methods in schema["paths"].values():
            for operation in methods.values():
                for status_code, response in operation.get("responses", {}).items():
                    content = response.get("content", {})
                    if status_code.startswith("4") and "application/json" not in content:
                        response["content"] = {"application/json": content.popitem()[1]}
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _error_body(err: MesError) -> dict[str, object]:
    return {"detail": err.message, **err.extra}


def _install_error_handlers(app: FastAPI) -> None:
    async def mes_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, MesError)
        headers = {"WWW-Authenticate": "Basic, Bearer"} if exc.status_code == 401 else None
        return JSONResponse(_error_body(exc), status_code=exc.status_code, headers=headers)

    async def integrity_error(_request: Request, exc: Exception) -> Response:
        log.info("integrity error turned into 409: %s", exc)
        return JSONResponse(
            {"detail": "conflicts with an existing record (duplicate or still referenced)"},
            status_code=409,
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers 422 to malformed JSON but 400 to bytes that are not UTF-8: one answer
            return JSONResponse(
                {
                    "detail": [
                        {"loc": ["body"], "msg": "body is not UTF-8 JSON", "type": "json_invalid"}
                    ]
                },
                status_code=422,
            )
        return await http_exception_handler(request, exc)

    async def validation_error(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        # ASCII-escaped: a refused value may hold a lone surrogate ("\ud800" in the JSON body),
        # which the default handler echoes back and then fails to encode as UTF-8 (a 500).
        # Bounded: the refused input is echoed in short excerpts, for a few errors only (a
        # 1 MiB array of bad items must not come back as megabytes of 422)
        body = json.dumps({"detail": bounded_errors(exc.errors())}, ensure_ascii=True)
        return Response(body, status_code=422, media_type="application/json")

    app.add_exception_handler(MesError, mes_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(IntegrityError, integrity_error)
    app.add_exception_handler(StarletteHTTPException, http_error)


def _install_audit(app: FastAPI, runtime: deps.Runtime) -> None:
    """Every change (and every refused attempt at one), and every authentication failure on
    any route and method, lands in the audit trail with the client address.

    Refusals of requests nobody authenticated (wrong password, bad token, 429, anonymous
    writes) go through the flood bound of :class:`AuditTrail`; retention and capacity are
    checked at start and then by a housekeeping task of the app's lifespan.
    """
    trail = runtime.audit
    trail.housekeep(force=True)

    def record(scope: Scope, status_code: int) -> AuditRow | None:
        """Queue a refusal (cheap, no database: on the loop), or return the row to write."""
        request = Request(scope)
        state = request.state
        failure: dict[str, str] | None = getattr(state, "auth_failure", None)
        user: str | None = getattr(state, "user", None)
        mutating = request.method in MUTATING and request.url.path.startswith(API_PREFIX)
        if failure is None and not mutating:
            return None
        detail: dict[str, Any] | None = getattr(state, "audit_detail", None)
        if failure is not None:
            detail = {**(detail or {}), "auth": failure["reason"]}
        row = AuditRow(
            username=(failure["username"] if failure else user) or "anonymous",
            action=f"{request.method} {request.url.path}",
            entity="auth" if failure else getattr(state, "audit_entity", None),
            entity_id=None if failure else getattr(state, "audit_entity_id", None),
            status_code=status_code,
            result="ok" if status_code < 400 else "refused" if status_code < 500 else "error",
            address=deps.client_address(request),
            detail=detail,
        )
        if user is None and status_code >= 400:
            trail.refusal(row)  # nobody authenticated: bounded against floods
            return None
        return row

    # pure ASGI, with the early 429 for rate-limited Basic credentials (audit_middleware)
    app.add_middleware(AuditMiddleware, runtime=runtime, record=record, api_prefix=API_PREFIX)

    async def housekeeping() -> None:
        """Flood summaries, retention, capacity; supervised: an error is logged and retried."""
        failing = False
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                await run_in_threadpool(trail.flush)
                await run_in_threadpool(trail.housekeep)
            except Exception:
                if not failing:
                    log.exception("audit housekeeping failed; retrying every %d s", HOUSEKEEPING_S)
                failing = True
            else:
                if failing:
                    log.info("audit housekeeping works again")
                failing = False

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app_: FastAPI) -> AsyncIterator[Any]:
        task = asyncio.create_task(housekeeping(), name="mes-audit-housekeeping")
        async with inner(app_) as state:
            try:
                yield state
            finally:  # before the inner lifespan disposes of the engine
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await run_in_threadpool(trail.flush, True)
                runtime.login_guard.verifier.close()  # its scrypt threads

    app.router.lifespan_context = lifespan
