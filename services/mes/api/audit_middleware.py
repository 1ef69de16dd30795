"""The audit middleware (pure ASGI) and the early login gate in front of the whole app.

Pure ASGI rather than ``@app.middleware("http")``: that wrapper costs a task and two memory
streams per request, and under a flood of wrong passwords every millisecond per request is
taken from ``/health``. For the same reason a request whose Basic credentials are already
rate limited is answered 429 here, before routing, dependency resolution and any session:
the answer is the one the route would give (same body, ``Retry-After``), only cheaper.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microfactory.mes.api.asgi_json import send_json
from microfactory.mes.api.deps import Runtime, decode_basic, note_auth_failure, scope_address
from microfactory.mes.audit import AuditRow

MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})

Record = Callable[[Scope, int], AuditRow | None]


def basic_username(scope: Scope) -> str | None:
    """The user name of a well-formed Basic ``Authorization`` header, else None."""
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, encoded = value.partition(b" ")
            credential = decode_basic(encoded) if scheme.lower() == b"basic" else None
            return credential[0] if credential and credential[1] is not None else None
    return None


class AuditMiddleware:
    """Calls ``record(scope, status)`` after every request that may need an audit row; writes
    the row it returns in a worker thread (``record`` queues refusals itself, no database)."""

    def __init__(self, app: ASGIApp, *, runtime: Runtime, record: Record, api_prefix: str) -> None:
        self.app = app
        self.runtime = runtime
        self.record = record
        self.api_prefix = api_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if await self._gate(scope, send):
            self.record(scope, 429)  # a refusal: queued, never written here
            return
        status = 500  # what the client gets if the app raises

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            state: dict[str, Any] = scope.get("state", {})
            if scope.get("method") in MUTATING or "auth_failure" in state:
                row = self.record(scope, status)
                if row is not None:
                    await run_in_threadpool(self.runtime.audit.write, row)

    async def _gate(self, scope: Scope, send: Send) -> bool:
        """Answer 429 at once to Basic credentials that are rate limited; True if it did."""
        username = basic_username(scope)
        if username is None or not scope.get("path", "").startswith(self.api_prefix):
            return False
        guard = self.runtime.login_guard
        wait = guard.throttle.retry_after(username, scope_address(scope))
        if not wait:
            return False
        retry, detail = guard.limited(wait)
        note_auth_failure(scope, username, "rate limited")
        await send_json(send, 429, detail, ((b"retry-after", str(retry).encode()),))
        return True
