"""Health, authentication, users, configuration, the audit trail and raw event ingestion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError
from sqlalchemy import select, text
from sqlalchemy.exc import SQLAlchemyError

from microfactory.contract import MachineEvent
from microfactory.mes.api.deps import (
    Admin,
    CurrentUser,
    Limit,
    Manager,
    Offset,
    RuntimeDep,
    SessionDep,
    audit_note,
    authenticate,
    effective_settings,
)
from microfactory.mes.api.paging import paginate
from microfactory.mes.api.schemas import (
    MAX_INT,
    AuditPublic,
    ConfigPublic,
    ConfigUpdate,
    EventPublic,
    GapPublic,
    Health,
    IngestResponse,
    Page,
    TokenRequest,
    TokenResponse,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from microfactory.mes.errors import Conflict, Invalid, MesError, NotFound
from microfactory.mes.ingest import ingest_event
from microfactory.mes.models import AuditEntry, ConfigEntry, EventRecord, Gap, Role, User
from microfactory.mes.security import hash_password, issue_token, password_problem

router = APIRouter()


class Unavailable(MesError):
    status_code = 503


@router.get("/health", response_model=Health, tags=["system"])
def health(runtime: RuntimeDep, session: SessionDep) -> Health:
    """Liveness and the two dependencies that matter: the database and the broker."""
    try:
        session.execute(text("SELECT 1"))
    except SQLAlchemyError as err:
        raise Unavailable("database unreachable") from err
    mqtt = runtime.mqtt_status()
    return Health(
        status="ok",
        database="ok",
        mqtt="connected"
        if mqtt == "connected"
        else "disconnected"
        if mqtt == "disconnected"
        else "disabled",
        site=runtime.settings.site,
        version="0.1.0",
    )


@router.post("/auth/token", response_model=TokenResponse, tags=["auth"])
async def token(
    body: TokenRequest, request: Request, runtime: RuntimeDep, session: SessionDep
) -> TokenResponse:
    """Trade a username and password for a bearer token (HMAC-signed, carrying the user's
    token version: a password change or a disable revokes it). Failed logins are limited per
    user name and per client address (429 with Retry-After)."""
    user = await authenticate(request, session, runtime, body.username, body.password)
    request.state.user = user.username
    audit_note(request, "user", user.username, login="ok")
    ttl = runtime.settings.token_ttl_s
    return TokenResponse(
        access_token=issue_token(
            runtime.secret_key, user.username, ttl, version=user.token_version
        ),
        expires_in=ttl,
        role=Role(user.role),
    )


@router.get("/auth/me", response_model=UserPublic, tags=["auth"])
def me(user: CurrentUser) -> User:
    return user


def _check_password(runtime: RuntimeDep, username: str, password: str) -> None:
    """The password policy (security.password_problem); demo mode, whose users are
    operator/operator and the like by design, skips it."""
    if runtime.settings.demo:
        return
    problem = password_problem(username, password)
    if problem is not None:
        raise Invalid("password", problem)


@router.get("/users", response_model=Page[UserPublic], tags=["users"])
def list_users(
    _: Admin, session: SessionDep, limit: Limit = 50, offset: Offset = 0
) -> Page[UserPublic]:
    return paginate(session, select(User).order_by(User.id), limit, offset, UserPublic)


@router.post(
    "/users", response_model=UserPublic, status_code=status.HTTP_201_CREATED, tags=["users"]
)
def create_user(
    body: UserCreate, request: Request, _: Admin, runtime: RuntimeDep, session: SessionDep
) -> User:
    _check_password(runtime, body.username, body.password)
    if session.scalars(select(User).where(User.username == body.username)).first():
        raise Conflict(f"user {body.username!r} already exists", field="username")
    user = User(
        username=body.username,
        password_hash=hash_password(body.password),
        role=body.role,
        full_name=body.full_name,
    )
    session.add(user)
    session.commit()
    audit_note(request, "user", user.id, username=user.username, role=user.role)
    return user


def _user(session: SessionDep, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    return user


UserId = Annotated[int, Path(ge=1, le=MAX_INT)]


@router.get("/users/{user_id}", response_model=UserPublic, tags=["users"])
def get_user(user_id: UserId, _: Admin, session: SessionDep) -> User:
    return _user(session, user_id)


@router.patch("/users/{user_id}", response_model=UserPublic, tags=["users"])
def update_user(
    user_id: UserId,
    body: UserUpdate,
    request: Request,
    admin: Admin,
    runtime: RuntimeDep,
    session: SessionDep,
) -> User:
    user = _user(session, user_id)
    if body.password is not None:
        _check_password(runtime, user.username, body.password)
        user.password_hash = hash_password(body.password)
    if user.id == admin.id and (body.active is False or (body.role and body.role != Role.admin)):
        raise Conflict("an admin cannot demote or disable themselves", field="role")
    if body.role is not None:
        user.role = body.role
    if body.full_name is not None:
        user.full_name = body.full_name
    if body.active is not None:
        user.active = body.active
    if body.password is not None or body.active is False:
        # every token issued so far dies; a role change needs no bump: the role is read
        # from the database on each request, so a demotion takes effect at once anyway
        user.token_version += 1
    session.commit()
    runtime.login_guard.cache.forget(user.username)
    changed = body.model_dump(exclude_unset=True, exclude={"password"})
    audit_note(request, "user", user.id, password_changed=body.password is not None, **changed)
    return user


@router.get("/audit", response_model=Page[AuditPublic], tags=["system"])
def audit(
    _: Manager,
    runtime: RuntimeDep,
    session: SessionDep,
    username: Annotated[str | None, Query(max_length=64)] = None,
    entity: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AuditPublic]:
    """The audit trail, newest first: who changed what, from where, when, and whether it was
    accepted; authentication failures have ``entity`` = ``auth``."""
    runtime.audit.drain()  # refusals are written by a thread of their own: include them all
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if username:
        query = query.where(AuditEntry.username == username)
    if entity:
        query = query.where(AuditEntry.entity == entity)
    return paginate(session, query, limit, offset, AuditPublic)


@router.get("/metrics", response_class=PlainTextResponse, tags=["system"])
def metrics(runtime: RuntimeDep) -> str:
    """Prometheus text: audit store fill (warning at 80 %) and login-guard counters.

    Figures only, no user names or addresses, so like ``/health`` it needs no login (a
    scraper has none). Read from memory: a scrape costs no database query.
    """
    guard = runtime.login_guard
    lines: list[str] = []

    def put(
        name: str, kind: str, help_text: str, value: float | dict[str, int], label: str = ""
    ) -> None:
        """One family: a value, or one sample per ``label`` value (a dict)."""
        lines.extend((f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"))
        if isinstance(value, dict):
            lines.extend(f'{name}{{{label}="{k}"}} {n:g}' for k, n in sorted(value.items()))
        else:
            lines.append(f"{name} {value:g}")

    audit = runtime.audit.metrics()
    put("microfactory_mes_audit_rows", "gauge", "rows in the audit store", audit["rows"])
    put("microfactory_mes_audit_max_rows", "gauge", "audit capacity", audit["max_rows"])
    put("microfactory_mes_audit_fill_ratio", "gauge", "rows / capacity", audit["fill_ratio"])
    put(
        "microfactory_mes_audit_capacity_warning",
        "gauge",
        "1 when the audit store is at 80 % of its capacity or more",
        audit["capacity_warning"],
    )
    for key, help_text in (
        ("written_total", "audit rows written"),
        ("suppressed_total", "unauthenticated refusals counted in flood summary rows"),
        ("dropped_total", "oldest audit rows deleted because the store was full"),
        ("expired_total", "audit rows deleted by retention"),
        ("write_errors_total", "audit rows that could not be written"),
    ):
        put(f"microfactory_mes_audit_{key}", "counter", help_text, audit[key])
    put("microfactory_mes_auth_failures_total", "counter", "wrong passwords", guard.failures)
    put(
        "microfactory_mes_auth_rate_limited_total",
        "counter",
        "logins refused with 429",
        guard.rate_limited,
    )
    put("microfactory_mes_auth_busy_total", "counter", "logins refused with 503", guard.busy)
    put(
        "microfactory_mes_auth_verifications_peak",
        "gauge",
        "most password checks (scrypt) seen running at once",
        guard.verifier.peak,
    )
    refused = getattr(runtime.publisher, "refused", None)  # the MQTT bridge, when there is one
    if isinstance(refused, dict):
        put(
            "microfactory_mes_mqtt_refused_total",
            "counter",
            "machine events refused on arrival (forged, oversized, badly signed, of another site)",
            refused,
            label="reason",
        )
    return "\n".join(lines) + "\n"


def _config(runtime: RuntimeDep, session: SessionDep) -> ConfigPublic:
    settings = effective_settings(session, runtime.settings)
    return ConfigPublic(
        site=settings.site,
        co2e_g_per_kwh=settings.co2e_g_per_kwh,
        timezone=settings.timezone,
        shifts=[s.model_dump() for s in settings.shifts],
        demo=settings.demo,
    )


@router.get("/config", response_model=ConfigPublic, tags=["system"])
def get_config(_: Manager, runtime: RuntimeDep, session: SessionDep) -> ConfigPublic:
    return _config(runtime, session)


@router.put("/config", response_model=ConfigPublic, tags=["system"])
def put_config(
    body: ConfigUpdate, request: Request, _: Admin, runtime: RuntimeDep, session: SessionDep
) -> ConfigPublic:
    """Change the grid CO2e factor at run time (kept in the database, wins over settings)."""
    if body.co2e_g_per_kwh is not None:
        row = session.get(ConfigEntry, "co2e_g_per_kwh")
        if row is None:
            session.add(ConfigEntry(key="co2e_g_per_kwh", value={"value": body.co2e_g_per_kwh}))
        else:
            row.value = {"value": body.co2e_g_per_kwh}
        session.commit()
    audit_note(request, "config", "site", **body.model_dump(exclude_unset=True))
    return _config(runtime, session)


@router.post("/events", response_model=IngestResponse, tags=["events"])
def post_event(
    body: MachineEvent, request: Request, _: Admin, runtime: RuntimeDep, session: SessionDep
) -> IngestResponse:
    """Ingest one machine event over HTTP, as if it came over MQTT (idempotent).

    Stricter than MQTT, where no one could correct it: an event that would be rejected, or
    whose energy or cycle time is not a measurement, is a 422 naming the field.
    """
    if not 0 <= body.ts_ns < 2**62:
        raise Invalid("ts_ns", "outside the representable time range")
    try:
        result = ingest_event(session, body, runtime.settings.site, strict=True)
    except ValidationError as err:
        raise Invalid("body", str(err)) from err
    session.commit()
    audit_note(request, "event", body.event_id, outcome=result.outcome)
    return IngestResponse(
        event_id=result.event_id,
        outcome=result.outcome,
        duplicate=result.duplicate,
        part_id=result.part_id,
        run_id=result.run_id,
    )


@router.get("/events", response_model=Page[EventPublic], tags=["events"])
def list_events(
    _: Manager,
    session: SessionDep,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
    kind: Annotated[str | None, Query(max_length=32)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[EventPublic]:
    query = select(EventRecord).order_by(EventRecord.ts_ns.desc())
    if machine_id:
        query = query.where(EventRecord.machine_id == machine_id)
    if kind:
        query = query.where(EventRecord.kind == kind)
    return paginate(session, query, limit, offset, EventPublic)


@router.get("/gaps", response_model=Page[GapPublic], tags=["events"])
def list_gaps(
    _: CurrentUser,
    session: SessionDep,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[GapPublic]:
    query = select(Gap).order_by(Gap.end_ns.desc())
    if machine_id:
        query = query.where(Gap.machine_id == machine_id)
    return paginate(session, query, limit, offset, GapPublic)
