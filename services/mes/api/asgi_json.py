"""A JSON answer sent straight through ASGI, for middlewares that refuse before the app runs.

The 413 of an oversized body and the 429 of a rate-limited login are sent before FastAPI (and
its exception handlers) see the request: one place says how such an answer looks.
"""

from __future__ import annotations

import json

from starlette.types import Send


async def send_json(
    send: Send, status: int, detail: str, headers: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    """Send ``{"detail": detail}`` with ``status`` and any extra ``headers``."""
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
