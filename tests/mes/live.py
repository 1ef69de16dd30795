"""The MES app served by a real uvicorn in a thread of the test process (see mes.server)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from microfactory.cli.ports import free_port
from microfactory.mes.api.app import create_app
from microfactory.mes.server import RunningServer, serve_in_loop
from microfactory.mes.settings import MesSettings


class LiveMes:
    """The MES app served by uvicorn in an asyncio loop on a daemon thread."""

    def __init__(
        self,
        settings: MesSettings,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        forwarded_allow_ips: str | None = None,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        app = create_app(settings, start_bridge=False)
        self.port = free_port()
        self.server: RunningServer = self._run(
            serve_in_loop(
                app,
                "127.0.0.1",
                self.port,
                tls_cert=tls_cert,
                tls_key=tls_key,
                forwarded_allow_ips=forwarded_allow_ips,
            )
        )
        self.url = self.server.url
        self._health = httpx.Client(timeout=10)  # one client: no TLS context built per request

    def health_ms(self) -> float:
        """Milliseconds of one ``GET /api/v1/health``."""
        t0 = time.perf_counter()
        r = self._health.get(f"{self.url}/api/v1/health")
        assert r.status_code == 200
        return (time.perf_counter() - t0) * 1000

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self._health.close()
        self._run(self.server.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
