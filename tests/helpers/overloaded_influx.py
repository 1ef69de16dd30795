"""A real HTTP server in front of InfluxDB that behaves like an overloaded one.

It answers the first writes with the statuses a test scripts (429 / 503 with Retry-After),
then forwards every request to the real InfluxDB and relays its answer. Every request is
recorded with the time it arrived, so a test can check when the gateway came back.
"""

from __future__ import annotations

import math
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass(frozen=True)
class Refusal:
    status: int  # 429 or 503
    # the Retry-After header: seconds, or "date+N" for an HTTP date N s after the answer
    retry_after: str | None


def _header(value: str | None, now: float) -> str | None:
    if value is None or not value.startswith("date+"):
        return value
    return formatdate(math.ceil(now) + int(value.removeprefix("date+")), usegmt=True)


@dataclass
class Seen:
    at_wall: float  # time.time() when the request arrived
    path: str
    status: int
    lines: int
    retry_after: str | None = None


class OverloadedInflux:
    """``with OverloadedInflux(upstream, script) as srv: srv.url ...``"""

    def __init__(self, upstream: str, script: list[Refusal] | None = None) -> None:
        self.upstream = upstream.rstrip("/")
        self.script = list(script or [])
        self.seen: list[Seen] = []
        self.hold = threading.Event()  # set: answer 503 (Retry-After 1) to every write
        self._lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _relay(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                now = time.time()
                refusal: Refusal | None = None
                is_write = self.path.startswith("/write")
                with outer._lock:
                    if is_write and outer.hold.is_set():
                        refusal = Refusal(503, "1")
                    elif is_write and outer.script:
                        scripted = outer.script.pop(0)
                        refusal = Refusal(scripted.status, _header(scripted.retry_after, now))
                    lines = body.count(b"\n") + 1 if body else 0
                    if refusal is not None:
                        outer.seen.append(
                            Seen(now, self.path, refusal.status, lines, refusal.retry_after)
                        )
                if refusal is not None:
                    msg = b'{"error":"overloaded"}'
                    self.send_response(refusal.status)
                    if refusal.retry_after is not None:
                        self.send_header("Retry-After", refusal.retry_after)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                req = urllib.request.Request(
                    outer.upstream + self.path,
                    data=body if method == "POST" else None,
                    method=method,
                )
                try:
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        status, payload = resp.status, resp.read()
                except urllib.error.HTTPError as err:
                    status, payload = err.code, err.read()
                except OSError:
                    status, payload = 502, b'{"error":"upstream unreachable"}'
                if is_write:
                    with outer._lock:
                        outer.seen.append(Seen(now, self.path, status, lines))
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_POST(self) -> None:
                self._relay("POST")

            def do_GET(self) -> None:
                self._relay("GET")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def writes(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def __enter__(self) -> OverloadedInflux:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __iter__(self) -> Iterator[Seen]:
        return iter(self.writes())
