"""The example adapter of docs/writing-an-adapter.md passes the conformance kit.

Its counterpart is a small HTTP energy meter on a free port of 127.0.0.1 that can be stopped
and started again on the same port, and asked to answer one page that is not JSON.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from microfactory.cli.ports import free_port
from microfactory.gateway.testing import AdapterConformance, BadConfig

pytestmark = pytest.mark.integration  # the meter is an HTTP server on 127.0.0.1

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "example_adapter.py"


def _load_example() -> Any:
    """Import the example file under a name of its own (the docs test installs it apart)."""
    spec = importlib.util.spec_from_file_location("docs_example_adapter", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


example = _load_example()


class Meter:
    """An HTTP meter answering ``/status.json``; ``garbage`` makes the next answer non-JSON."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/status.json"
        self.garbage = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    def adapter_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "http_json",
            "name": name,
            "machine": "meter-2",
            "url": self.url,
            "interval_s": 0.05,
            "timeout_s": 1,
            "reconnect_max_s": 0.5,
            "timestamp_path": "ts",
            "points": [
                {"path": "power.kw", "signal": "power_active", "unit": "kW"},
                {"path": "state", "signal": "state"},
            ],
        }

    async def start(self) -> None:
        meter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if meter.garbage.is_set():
                    meter.garbage.clear()
                    body = b"<html>busy</html>"
                else:
                    doc = {
                        "ts": time.time_ns() // 1_000_000,
                        "power": {"kw": 3.2},
                        "state": "running",
                    }
                    body = json.dumps(doc).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    async def send_bad_payload(self) -> None:
        self.garbage.set()


GOOD: dict[str, Any] = Meter().adapter_config("meter")


class TestExampleAdapterConformance(AdapterConformance):
    plugin = example.plugin
    machines = frozenset({"meter-2"})
    bad_configs = (
        BadConfig({**GOOD, "url": "ftp://meter/status"}, "url"),
        BadConfig({**GOOD, "interval_s": 0}, "interval_s"),
        BadConfig({**GOOD, "points": []}, "points"),
        BadConfig(
            {**GOOD, "points": [{"path": "p", "signal": "power_active", "unit": "bar"}]},
            "points[0].unit",
            id="unit",
        ),
        BadConfig({**GOOD, "colour": "red"}, "colour", id="unknown field"),
        BadConfig({k: v for k, v in GOOD.items() if k != "machine"}, "machine", id="missing"),
    )

    @pytest.fixture
    def counterpart(self) -> Meter:
        return Meter()
