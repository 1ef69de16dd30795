"""Running the MES app with uvicorn inside an asyncio program that owns the signals."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from fastapi import FastAPI


class EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves SIGINT/SIGTERM to the host program (the demo, a test)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None


class RunningServer:
    """Handle on a uvicorn server serving in the current event loop."""

    def __init__(self, server: EmbeddedServer, task: asyncio.Task[None], url: str) -> None:
        self.server = server
        self.task = task
        self.url = url

    async def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        try:
            await asyncio.wait_for(asyncio.shield(self.task), timeout_s)
        except TimeoutError:
            self.server.force_exit = True
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def serve_in_loop(
    app: FastAPI,
    host: str,
    port: int,
    *,
    log_level: str = "warning",
    timeout_s: float = 30.0,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    forwarded_allow_ips: str | None = None,
) -> RunningServer:
    """Start serving ``app`` on host:port in the running loop; return once it accepts.

    With ``tls_cert`` and ``tls_key`` (PEM files) it serves HTTPS only: a plain HTTP request
    on that port gets no answer. ``X-Forwarded-For`` is believed only from
    ``forwarded_allow_ips`` (a reverse proxy): uvicorn's default trusts 127.0.0.1, which would
    let any local process pick the address the audit records and the rate limits count.
    """
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key: give both (HTTPS) or neither (plain HTTP)")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        lifespan="on",
        access_log=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        proxy_headers=forwarded_allow_ips is not None,
        forwarded_allow_ips=forwarded_allow_ips or "",
    )
    server = EmbeddedServer(config)
    task = asyncio.create_task(server.serve(), name=f"mes-http:{port}")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not server.started:
        if task.done():
            task.result()  # raises what stopped it
            raise RuntimeError(f"MES server on {host}:{port} exited during start")
        if loop.time() > deadline:
            server.should_exit = True
            raise TimeoutError(f"MES server on {host}:{port} did not start in {timeout_s:g} s")
        await asyncio.sleep(0.02)
    scheme = "https" if tls_cert is not None else "http"
    return RunningServer(server, task, f"{scheme}://{host}:{port}")
