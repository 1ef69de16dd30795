"""Dependencies shared by the routes: the runtime, a session, the current user and role checks."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request
from fastapi.security import (
    HTTPAuthorizationCredentials,
    HTTPBasic,
    HTTPBasicCredentials,
    HTTPBearer,
)
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from microfactory.mes.context import ContextPublisher, machine_context
from microfactory.mes.errors import AuthError, Forbidden
from microfactory.mes.models import ConfigEntry, Role, User
from microfactory.mes.security import has_role, is_demo_password, read_token, verify_password
from microfactory.mes.settings import MesSettings


@dataclass
class Runtime:
    """Everything a request needs, built once by ``create_app``; no module-level state."""

    settings: MesSettings
    engine: Engine
    sessions: sessionmaker[Session]
    publisher: ContextPublisher
    mqtt_status: Callable[[], str]

    def publish_contexts(self, machine_ids: set[str]) -> None:
        """Publish after commit so the wire never shows a context the database rolled back."""
        if not machine_ids:
            return
        with self.sessions() as session:
            for machine_id in sorted(machine_ids):
                self.publisher.publish_context(
                    machine_context(session, self.settings.site, machine_id)
                )


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    session = runtime.sessions()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


SessionDep = Annotated[Session, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False, description="token from POST /api/v1/auth/token")
_basic = HTTPBasic(auto_error=False, description="username and password on every request")


def authenticate(session: Session, settings: MesSettings, username: str, password: str) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None or not user.active or not verify_password(password, user.password_hash):
        raise AuthError("wrong username or password")
    if not settings.demo and is_demo_password(username, password):
        raise Forbidden(
            "this is a documented demo password, refused outside demo mode; "
            "an admin must set a real password"
        )
    return user


def _user_from_header(request: Request, session: Session, runtime: Runtime) -> User:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value:
        username = read_token(runtime.settings.secret_key, value.strip())
        if username is None:
            raise AuthError("invalid or expired token")
        user = session.scalars(select(User).where(User.username == username)).first()
        if user is None or not user.active:
            raise AuthError("user of this token no longer exists or is disabled")
        return user
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as err:
            raise AuthError("malformed basic credentials") from err
        username, sep, password = decoded.partition(":")
        if not sep:
            raise AuthError("malformed basic credentials")
        return authenticate(session, runtime.settings, username, password)
    raise AuthError("authentication required: HTTP Basic or a bearer token")


def current_user(
    request: Request,
    session: SessionDep,
    runtime: RuntimeDep,
    _bearer_doc: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    _basic_doc: Annotated[HTTPBasicCredentials | None, Depends(_basic)] = None,
) -> User:
    user = _user_from_header(request, session, runtime)
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
