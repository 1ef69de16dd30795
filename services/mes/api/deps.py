"""Dependencies shared by the routes: the runtime, a session, the current user and role checks."""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.types import Scope

from microfactory.mes.audit import USERNAME_CHARS, AuditTrail
from microfactory.mes.context import ContextPublisher, machine_context
from microfactory.mes.errors import AuthError, Forbidden
from microfactory.mes.login_guard import Busy, LoginGuard
from microfactory.mes.models import ConfigEntry, Role, User
from microfactory.mes.security import has_role, is_demo_password, read_token
from microfactory.mes.settings import MesSettings


@dataclass
class Runtime:
    """Everything a request needs, built once by ``create_app``; no module-level state."""

    settings: MesSettings
    engine: Engine
    sessions: sessionmaker[Session]
    publisher: ContextPublisher
    mqtt_status: Callable[[], str]
    secret_key: str  # of the bearer tokens: settings', or the state directory's
    login_guard: LoginGuard = field(init=False)
    audit: AuditTrail = field(init=False)

    def __post_init__(self) -> None:
        self.login_guard = LoginGuard.from_settings(self.settings)
        self.audit = AuditTrail(
            self.sessions,
            retention_days=self.settings.audit_retention_days,
            max_rows=self.settings.audit_max_rows,
        )

    def publish_contexts(self, machine_ids: set[str]) -> None:
        """Publish after commit so the wire never shows a context the database rolled back."""
        if not machine_ids:
            return
        with self.sessions() as session:
            for machine_id in sorted(machine_ids):
                self.publisher.publish_context(
                    machine_context(session, self.settings.site, machine_id)
                )


async def get_runtime(request: Request) -> Runtime:  # async: no threadpool hop per request
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[Session]:
    """A session per request. Async: creating one does no I/O, and one never used (a refused
    login) is closed on the loop; one that ran a query is closed in a worker thread. Two
    threadpool hops fewer per request, which counts when forty refused logins arrive at once."""
    session = runtime.sessions()
    try:
        yield session
    finally:
        if session.in_transaction():
            await run_in_threadpool(_end, session)
        else:
            session.close()


def _end(session: Session) -> None:
    session.rollback()
    session.close()


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="token from POST /api/v1/auth/token")
_basic = HTTPBasic(auto_error=False, description="username and password on every request")


def scope_address(scope: Scope) -> str:
    """The peer's address (behind the reverse proxy named in ``forwarded_allow_ips``: the
    forwarded one, which uvicorn resolves from X-Forwarded-For for that proxy only)."""
    client = scope.get("client")
    return str(client[0]) if client else "?"


def client_address(request: Request) -> str:
    return scope_address(request.scope)


def decode_basic(encoded: str | bytes) -> tuple[str, str | None] | None:
    """(user name, password) of a Basic credential; password None without a ':'; None when
    it is not base64 of UTF-8."""
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, sep, password = decoded.partition(":")
    return username, password if sep else None


def note_auth_failure(scope: Scope, username: str, reason: str) -> None:
    """Tell the audit middleware who failed to authenticate, and why."""
    state: dict[str, Any] = scope.setdefault("state", {})
    state["auth_failure"] = {"username": username[:USERNAME_CHARS], "reason": reason}


def _refuse(request: Request, username: str, reason: str, error: Exception) -> Exception:
    """Note an authentication failure for the audit trail; return the error to raise."""
    note_auth_failure(request.scope, username, reason)
    return error


def _too_many(runtime: Runtime, request: Request, username: str, wait_s: float) -> Exception:
    retry, detail = runtime.login_guard.limited(wait_s)
    return _refuse(
        request,
        username,
        "rate limited",
        HTTPException(429, detail, headers={"Retry-After": str(retry)}),
    )


def _find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == username)).first()


@dataclass(frozen=True)
class _Account:
    id: int
    password_hash: str
    active: bool


def _account(runtime: Runtime, username: str) -> _Account | None:
    """The login facts of a user, from a session closed at once: a request waiting for a
    scrypt slot must not hold a pooled connection (twenty of them did, and ``/health`` waited
    for the pool)."""
    with runtime.sessions() as session:
        user = _find_user(session, username)
        return None if user is None else _Account(user.id, user.password_hash, user.active)


async def authenticate(
    request: Request, session: Session, runtime: Runtime, username: str, password: str
) -> User:
    """Check a user name and password without letting a flood of guesses hurt the MES.

    The limits come first (no database, no scrypt) and the attempt is counted before the
    check, so concurrent guesses cannot all slip through before the first failure is known.
    Then the cache of verified credentials (a Basic-auth client pays scrypt once per few
    minutes), and only then scrypt, at most a few at once. Unknown user names cost a scrypt
    too, so the answer does not tell them apart. The cache is not a way around the limits:
    a limited client could otherwise test guesses against it for free.
    """
    guard = runtime.login_guard
    address = client_address(request)
    wait = guard.throttle.retry_after(username, address)
    if wait:
        raise _too_many(runtime, request, username, wait)
    attempt = guard.throttle.begin(username, address)
    account = await run_in_threadpool(_account, runtime, username)
    stored = account.password_hash if account is not None else guard.dummy_hash
    verified = guard.cache.hit(username, password, stored)
    if not verified:
        try:
            verified = await guard.verifier.verify(password, stored)
        except Busy:
            attempt.cancelled()
            guard.busy += 1
            raise _refuse(
                request,
                username,
                "busy",
                HTTPException(503, "too many logins at once; try again", {"Retry-After": "1"}),
            ) from None
        if verified and account is not None:
            guard.cache.add(username, password, stored)
    user = None
    if verified and account is not None and account.active:
        user = await run_in_threadpool(session.get, User, account.id)
    if user is None or not user.active or user.password_hash != stored:
        guard.failures += 1
        reason = (
            "unknown user"
            if account is None
            else "disabled"
            if not account.active
            else "password"
            if not verified
            else "changed meanwhile"
        )
        raise _refuse(request, username, reason, AuthError("wrong username or password"))
    attempt.succeeded()
    if not runtime.settings.demo and is_demo_password(username, password):
        raise _refuse(
            request,
            username,
            "demo password",
            Forbidden(
                "this is a documented demo password, refused outside demo mode; "
                "an admin must set a real password"
            ),
        )
    return user


async def _user_from_header(request: Request, session: Session, runtime: Runtime) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        claims = read_token(runtime.secret_key, value.strip())
        if claims is None:
            raise _refuse(request, "", "bad token", AuthError("invalid or expired token"))
        user = await run_in_threadpool(_find_user, session, claims.username)
        if user is None or not user.active:
            raise _refuse(
                request,
                claims.username,
                "token of a missing or disabled user",
                AuthError("user of this token no longer exists or is disabled"),
            )
        if claims.version != user.token_version:
            raise _refuse(
                request,
                claims.username,
                "revoked token",
                AuthError("token revoked (password changed or user disabled); log in again"),
            )
        return user
    if scheme.lower() == "basic" and value:
        credential = decode_basic(value)
        username, password = credential if credential is not None else ("", None)
        if password is None:
            raise _refuse(
                request, username, "malformed basic", AuthError("malformed basic credentials")
            )
        return await authenticate(request, session, runtime, username, password)
    raise _refuse(
        request,
        "",
        "no credentials",
        AuthError("authentication required: HTTP Basic or a bearer token"),
    )


async def current_user(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    _basic_doc: Annotated[HTTPBasicCredentials | None, Depends(_basic)] = None,
) -> User:
    user = await _user_from_header(request, session, runtime)
    request.state.user = user.username
    return user


def require(role: Role) -> Callable[..., User]:
    def check(user: Annotated[User, Depends(current_user)]) -> User:
        if not has_role(user.role, role):
            raise Forbidden(f"role {role} required; {user.username!r} is {user.role}")
        return user

    return check


CurrentUser = Annotated[User, Depends(current_user)]
Operator = Annotated[User, Depends(require(Role.operator))]
Manager = Annotated[User, Depends(require(Role.manager))]
Admin = Annotated[User, Depends(require(Role.admin))]

Limit = Annotated[int, Query(ge=1, le=1000, description="page size")]
Offset = Annotated[int, Query(ge=0, le=10_000_000, description="rows to skip")]


def effective_settings(session: Session, settings: MesSettings) -> MesSettings:
    """Settings with the admin's runtime overrides (config table) applied."""
    row = session.get(ConfigEntry, "co2e_g_per_kwh")
    if row is None:
        return settings
    return settings.model_copy(update={"co2e_g_per_kwh": float(row.value["value"])})


def audit_note(request: Request, entity: str, entity_id: object, **detail: object) -> None:
    """Tell the audit middleware what a request changed."""
    request.state.audit_entity = entity
    request.state.audit_entity_id = str(entity_id)
    request.state.audit_detail = {k: _plain(v) for k, v in detail.items()}


def _plain(value: object) -> object:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return str(value)
