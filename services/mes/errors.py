"""The MES's exception hierarchy; each maps to one precise HTTP status in the API layer."""

from __future__ import annotations

from typing import Any


class MesError(Exception):
    """Base of every error the MES raises on purpose."""

    status_code = 400

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(MesError):
    status_code = 404

    def __init__(self, entity: str, key: object) -> None:
        super().__init__(f"{entity} {key!r} not found", entity=entity, id=str(key))


class Conflict(MesError):
    """The request is valid but clashes with the current state or an existing record."""

    status_code = 409


class InvalidTransition(Conflict):
    def __init__(self, entity: str, key: object, current: str, action: str) -> None:
        super().__init__(
            f"cannot {action} {entity} {key!r}: it is {current}",
            entity=entity,
            id=str(key),
            current_state=current,
            action=action,
        )


class Invalid(MesError):
    """A value is well-formed but not acceptable; names the offending field."""

    status_code = 422

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class AuthError(MesError):
    status_code = 401


class Forbidden(MesError):
    status_code = 403
