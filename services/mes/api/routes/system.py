"""Health, authentication, users, configuration, the audit trail and raw event ingestion."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
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
from microfactory.mes.security import (
    MIN_PASSWORD_LENGTH,
    hash_password,
    is_demo_password,
    issue_token,
)

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
def token(
    body: TokenRequest, request: Request, runtime: RuntimeDep, session: SessionDep
) -> TokenResponse:
    """Trade a username and password for a bearer token (stateless, HMAC-signed)."""
    user = authenticate(session, runtime.settings, body.username, body.password)
    request.state.user = user.username
    audit_note(request, "user", user.username, login="ok")
    ttl = runtime.settings.token_ttl_s
    return TokenResponse(
        access_token=issue_token(runtime.settings.secret_key, user.username, ttl),
        expires_in=ttl,
        role=Role(user.role),
    )


@router.get("/auth/me", response_model=UserPublic, tags=["auth"])
def me(user: CurrentUser) -> User:
    return user


def _check_password(runtime: RuntimeDep, username: str, password: str) -> None:
    if runtime.settings.demo:
        return
    if len(password) < MIN_PASSWORD_LENGTH:
        raise Invalid("password", f"at least {MIN_PASSWORD_LENGTH} characters")
    if is_demo_password(username, password):
        raise Invalid("password", "a demo or username-equal password is refused")


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
    session.commit()
    changed = body.model_dump(exclude_unset=True, exclude={"password"})
    audit_note(request, "user", user.id, password_changed=body.password is not None, **changed)
    return user


@router.get("/audit", response_model=Page[AuditPublic], tags=["system"])
def audit(
    _: Manager,
    session: SessionDep,
    username: Annotated[str | None, Query(max_length=64)] = None,
    entity: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[AuditPublic]:
    """The audit trail, newest first: who changed what, when, and whether it was accepted."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc())
    if username:
        query = query.where(AuditEntry.username == username)
    if entity:
        query = query.where(AuditEntry.entity == entity)
    return paginate(session, query, limit, offset, AuditPublic)


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
    if len(body.event_id) > 128:
        raise Invalid("event_id", "longer than 128 characters")
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
