"""Request bodies over the size limit are refused with 413 before anything parses them.

Without it, one unauthenticated 10 MB JSON array kept the event loop parsing for 21 s (``/health``
stalled) and came back as a 15 MB 422. A pure ASGI middleware, outside every other layer:

- a ``Content-Length`` over the limit is answered at once, the body never read;
- a body without one (chunked) is counted while the app receives it, and answered 413 the
  moment the count passes the limit; the server discards the rest, nothing buffers it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

from fastapi.encoders import jsonable_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from microfactory.mes.api.asgi_json import send_json

log = logging.getLogger(__name__)


class BodyTooLarge(Exception):
    """Raised into the app by ``receive`` once the body passes the limit; the 413 is sent."""


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.refused = 0  # counted, logged once per power of two: a flood is not a log flood

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await self._refuse(scope, send)
            return
        await _LimitedRequest(self, scope, receive, send).run()

    async def _refuse(self, scope: Scope, send: Send) -> None:
        self.refused += 1
        if self.refused & (self.refused - 1) == 0:
            log.warning(
                "refused a request body over %d bytes (%s %s); %d so far",
                self.max_bytes,
                scope.get("method"),
                scope.get("path"),
                self.refused,
            )
        await send_json(send, 413, f"request body larger than {self.max_bytes} bytes")


class _LimitedRequest:
    """One request whose body is counted as the app receives it."""

    def __init__(self, limit: BodySizeLimit, scope: Scope, receive: Receive, send: Send) -> None:
        self.limit = limit
        self.scope = scope
        self._receive = receive
        self._send = send
        self.received = 0
        self.started = False
        self.refused = False

    async def run(self) -> None:
        try:
            await self.limit.app(self.scope, self.receive, self.send)
        except BodyTooLarge:
            pass
        except BaseExceptionGroup as group:  # raised through an anyio task group
            match, rest = group.split(BodyTooLarge)
            if match is None:
                raise
            if rest is not None:
                raise rest from None

    async def receive(self) -> Message:
        if self.refused:
            raise BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit.max_bytes:
                self.refused = True
                if not self.started:
                    self.started = True
                    await self.limit._refuse(self.scope, self._send)
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        if self.refused:
            return  # the 413 went out already; whatever the app says now is dropped
        if message["type"] == "http.response.start":
            self.started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the server refuses a malformed length before we see it
    return None


MAX_ERRORS_SHOWN = 10
MAX_ECHO_CHARS = 120  # of one refused input (or ctx), as JSON text
MAX_LOC_CHARS = 40  # of one path segment: a key of the input is input too


def bounded_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Validation errors for a 422, with every echo of the input cut short.

    At most ``MAX_ERRORS_SHOWN`` errors (then one that counts the rest); an ``input`` (or a
    value of ``ctx``) longer than ``MAX_ECHO_CHARS`` as JSON becomes a string excerpt that says
    its full length.
    """
    shown: list[dict[str, Any]] = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        item = dict(err)  # cut first, encode after: never encode the whole input
        item["loc"] = [_cut(seg, MAX_LOC_CHARS) for seg in list(item.get("loc", []))[:12]]
        item["msg"] = _cut(str(item.get("msg", "")), 300)
        if "input" in item:
            item["input"] = _excerpt(item["input"])
        if isinstance(item.get("ctx"), dict):  # stays an object: each value cut short
            item["ctx"] = {str(k)[:MAX_LOC_CHARS]: _excerpt(v) for k, v in item["ctx"].items()}
        shown.append(jsonable_encoder(item))
    if len(errors) > MAX_ERRORS_SHOWN:
        shown.append(
            {
                "loc": [],
                "msg": f"{len(errors) - MAX_ERRORS_SHOWN} more errors not shown",
                "type": "too_many_errors",
            }
        )
    return shown


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]}… ({len(value)} chars)"
    return value


def _excerpt(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return _cut(value, MAX_ECHO_CHARS)
    text = json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= MAX_ECHO_CHARS:
        return value
    return f"{text[:MAX_ECHO_CHARS]}… ({len(text)} chars of JSON)"
