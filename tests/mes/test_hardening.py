"""The MES's HTTP surface under abuse: body limits, short 422s, security headers, offline /docs,
the token key (refused when short, kept in the state directory when unset) and HTTPS.

The size and timing scenarios run against a real uvicorn server on 127.0.0.1 with raw sockets,
so the 413 is the server's and not the test client's; the rest goes through the app factory.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from microfactory.cli.ports import free_port
from microfactory.mes.api.app import create_app
from microfactory.mes.api.headers import SECURITY_HEADERS
from microfactory.mes.api.limits import MAX_ECHO_CHARS, bounded_errors
from microfactory.mes.secret_key import KEY_FILE
from microfactory.mes.settings import MesSettings
from tests.helpers.markers import starts_server
from tests.mes.conftest import ADMIN, MakeClient
from tests.mes.live import LiveMes

MiB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]
CLI = REPO / ".venv" / "bin" / "microfactory"


@pytest.fixture
@starts_server("MES (uvicorn)")
def live_mes(tmp_path: Path) -> Iterator[LiveMes]:
    mes = LiveMes(MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}", site="demo"))
    mes.health_ms()  # the first request opens the database connection
    yield mes
    mes.close()


def _status_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


# ------------------------------------------------------------------ body size limit
@pytest.mark.integration
@pytest.mark.parametrize("size", [10 * MiB, 50 * MiB])
def test_oversized_body_with_content_length_is_413_at_once(live_mes: LiveMes, size: int) -> None:
    """Finding 4: an unauthenticated 10 MB / 50 MB array took 21 s / 116 s. Now the length alone
    is enough: 413 before the body is read. Bound 100 ms (the issue's); a loopback round trip
    takes about 1 ms even on a busy Pi, so only a server that reads the body could miss it."""
    head = (
        f"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live_mes.port), timeout=10) as sock:
        sock.sendall(head + b"[" + b"1," * 32 * 1024)  # a first slice of the body, as a client
        t0 = time.perf_counter()
        status = _status_line(sock)
        elapsed_ms = (time.perf_counter() - t0) * 1000
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert elapsed_ms < 100, f"413 after {elapsed_ms:.0f} ms"
    assert live_mes.health_ms() < 200


@pytest.mark.integration
@pytest.mark.parametrize("size", [10 * MiB, 50 * MiB])
def test_oversized_chunked_body_is_413_as_soon_as_it_passes_the_limit(
    live_mes: LiveMes, size: int
) -> None:
    """No Content-Length: the MES counts while it receives and answers once past 1 MiB, while
    the client is still sending; /health answers meanwhile (bound 200 ms, the issue's)."""
    head = (
        b"POST /api/v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b"1," * 32 * 1024  # 64 KiB
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    answered = threading.Event()
    sent = [0]

    def send_all(sock: socket.socket) -> None:
        try:
            sock.sendall(head + b"1\r\n[\r\n")
            while sent[0] < size and not answered.is_set():
                sock.sendall(chunk)
                sent[0] += len(piece)
        except OSError:
            pass  # the server may stop reading once it has answered

    with socket.create_connection(("127.0.0.1", live_mes.port), timeout=10) as sock:
        t0 = time.perf_counter()
        sender = threading.Thread(target=send_all, args=(sock,), daemon=True)
        sender.start()
        status = _status_line(sock)
        elapsed_ms = (time.perf_counter() - t0) * 1000
        answered.set()
        health_ms = live_mes.health_ms()
        sender.join(10)
    assert status == "HTTP/1.1 413 Request Entity Too Large"
    assert elapsed_ms < 100, f"413 after {elapsed_ms:.0f} ms"
    assert sent[0] < size, "the whole body was sent before the answer"
    assert health_ms < 200, f"/health took {health_ms:.0f} ms"


@pytest.mark.integration
def test_health_stays_fast_while_50_mb_bodies_stream_in(live_mes: LiveMes) -> None:
    """Two clients keep pushing whole 50 MB bodies (the server reads and discards past the 413);
    /health answers within 200 ms all the while (the issue's bound; 7.7 s before)."""
    stop = threading.Event()
    body = b"[" + b"1," * (25 * MiB)
    refused = [0]

    def flood() -> None:
        while not stop.is_set():
            head = (
                f"POST /api/v1/events HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            with socket.create_connection(("127.0.0.1", live_mes.port), timeout=10) as sock:
                sock.sendall(head)
                if _status_line(sock).startswith("HTTP/1.1 413"):
                    refused[0] += 1
                with contextlib.suppress(OSError):  # the server may close once it answered
                    sock.sendall(body)

    floods = [threading.Thread(target=flood, daemon=True) for _ in range(2)]
    for f in floods:
        f.start()
    try:
        time.sleep(0.3)
        took = sorted(live_mes.health_ms() for _ in range(10))
    finally:
        stop.set()
        for f in floods:
            f.join(20)
    assert refused[0] >= 2
    # nine probes in ten within the bound (the server shares this process's GIL with the two
    # flooding threads), and none near the old stall
    assert took[8] < 200 and took[9] < 1000, f"/health took {took} ms under the flood"


def test_body_limit_through_the_app(make_client: MakeClient, sqlite_url: str) -> None:
    """The limit is a setting; both framings are refused, a body under it passes through."""
    c = make_client(sqlite_url, max_body_bytes=64 * 1024)
    big = json.dumps({"username": "x" * 70_000, "password": "y"}).encode()
    r = c.post("/api/v1/auth/token", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert r.json() == {"detail": "request body larger than 65536 bytes"}
    assert r.headers["x-content-type-options"] == "nosniff"

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 10_000
        yield big

    r = c.post("/api/v1/auth/token", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    r = c.post("/api/v1/auth/token", json={"username": "admin", "password": "admin"})
    assert r.status_code == 200


# ------------------------------------------------------------------ 422 bodies
def test_422_echoes_only_a_short_excerpt_of_the_input(
    make_client: MakeClient, sqlite_url: str
) -> None:
    """Finding 4: a 10 MB array came back as a 15.7 MB 422. A 900 KB body of bad values (under
    the limit) now gets a 422 of a few KB: short excerpts, at most ten errors."""
    c = make_client(sqlite_url)
    cases: dict[str, bytes] = {
        "one huge value": json.dumps({"username": ["x" * 900_000], "password": 1}).encode(),
        "a huge array": json.dumps([1] * 300_000).encode(),
        "many bad keys": json.dumps({f"k{'x' * 200}{i}": i for i in range(4000)}).encode(),
    }
    for what, body in cases.items():
        assert 800_000 < len(body) < MiB, what
        r = c.post("/api/v1/auth/token", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 422, what
        assert len(r.content) < 4096, f"{what}: {len(r.content)} bytes of 422"
        errors = r.json()["detail"]
        assert errors and all({"loc", "msg", "type"} <= e.keys() for e in errors), what
    assert errors[-1]["type"] == "too_many_errors"
    assert re.fullmatch(r"\d+ more errors not shown", errors[-1]["msg"])


def test_bounded_errors_keeps_short_inputs_and_cuts_long_ones() -> None:
    short = {"loc": ["body", "a"], "msg": "bad", "type": "int_parsing", "input": "abc"}
    long = {"loc": ["body", "k" * 500], "msg": "bad", "type": "x", "input": list(range(10**5))}
    out = bounded_errors([short, long])
    assert out[0] == short
    assert out[1]["input"].startswith("[0, 1, 2")
    assert out[1]["input"].endswith("chars of JSON)")
    assert len(out[1]["input"]) < MAX_ECHO_CHARS + 40
    assert out[1]["loc"][1].startswith("kkk") and len(out[1]["loc"][1]) < 80


# ------------------------------------------------------------------ security headers, /docs
def test_security_headers_on_every_kind_of_response(
    make_client: MakeClient, sqlite_url: str
) -> None:
    c = make_client(sqlite_url)
    responses = {
        "health": c.get("/api/v1/health"),
        "401": c.get("/api/v1/orders"),
        "404": c.get("/nowhere"),
        "ui": c.get("/ui/"),
        "asset": c.get("/ui/static/app.js"),
        "schema": c.get("/openapi.json"),
        "docs": c.get("/docs"),
        "record": c.get("/api/v1/batches/1/record.html", auth=ADMIN),
    }
    for what, r in responses.items():
        for name, value in SECURITY_HEADERS.items():
            assert r.headers.get(name) == value, f"{what}: {name}"
    csp = dict(
        d.strip().split(" ", 1) for d in SECURITY_HEADERS["content-security-policy"].split(";")
    )
    assert csp["script-src"] == "'self'"  # no inline script, no eval
    assert csp["style-src"] == "'self'"  # no style="…" attributes
    assert csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'"


def test_docs_work_offline_with_local_assets_and_no_inline_script(
    make_client: MakeClient, sqlite_url: str
) -> None:
    c = make_client(sqlite_url)
    page = c.get("/docs")
    assert page.status_code == 200
    urls = re.findall(r'(?:src|href|data-openapi-url)="([^"]*)"', page.text)
    assert set(urls) == {
        "/docs/swagger-ui.css",
        "/docs/favicon.svg",
        "/docs/swagger-ui-bundle.js",
        "/docs/docs-init.js",
        "/openapi.json",
    }
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", page.text, re.S)
    assert scripts and all("src=" in attrs and not body.strip() for attrs, body in scripts)
    for url, kind in [
        ("/docs/swagger-ui.css", "text/css"),
        ("/docs/swagger-ui-bundle.js", "javascript"),
        ("/docs/docs-init.js", "javascript"),
    ]:
        r = c.get(url)
        assert r.status_code == 200 and kind in r.headers["content-type"], url
    assert len(c.get("/docs/swagger-ui-bundle.js").content) > 500_000  # the real bundle
    assert c.get("/docs/../settings.py").status_code == 404
    assert c.get("/docs/index.html").status_code == 404  # only the files the page needs
    assert c.get("/redoc").status_code == 404  # its CDN page is gone, not localised


# ------------------------------------------------------------------ the token key
@pytest.mark.parametrize("key", ["", "short", "x" * 31])
def test_short_secret_key_is_refused_naming_the_variable(key: str) -> None:
    with pytest.raises(ValidationError, match="MICROFACTORY_MES__SECRET_KEY"):
        MesSettings(secret_key=key)
    assert MesSettings(secret_key="k" * 32).secret_key == "k" * 32


def test_unset_secret_key_is_generated_once_and_survives_a_restart(tmp_path: Path) -> None:
    """Finding 6: tokens must be unforgeable and outlive a restart. The key is made on first
    start in the database's folder, mode 0600, and read back by the next app."""
    settings = MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}", demo=True)
    with TestClient(create_app(settings, start_bridge=False)) as c:
        from microfactory.mes import db
        from microfactory.mes.seed import seed_demo

        with db.session_scope(c.app.state.runtime.sessions) as session:  # type: ignore[attr-defined]
            seed_demo(session)
        r = c.post("/api/v1/auth/token", json={"username": "admin", "password": "admin"})
        token = r.json()["access_token"]
    key_file = tmp_path / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600
    key = key_file.read_text().strip()
    assert len(key.encode()) >= 32
    with TestClient(create_app(settings, start_bridge=False)) as c:
        me = c.get("/api/v1/auth/me", headers={"authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["username"] == "admin"
    assert key_file.read_text().strip() == key
    other = tmp_path / "elsewhere"
    app = create_app(settings.model_copy(update={"state_dir": other}), start_bridge=False)
    assert app.state.runtime.secret_key != key and (other / KEY_FILE).exists()


def test_in_memory_database_leaves_no_key_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = create_app(MesSettings(db_url="sqlite://"), start_bridge=False)
    assert len(app.state.runtime.secret_key) >= 32
    assert list(tmp_path.iterdir()) == []


def test_a_truncated_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).write_text("abc\n")
    with pytest.raises(ValueError, match="shorter than 32 bytes"):
        create_app(MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}"), start_bridge=False)


@pytest.mark.parametrize("key", ["", "too-short"])
def test_mes_serve_refuses_to_start_with_a_short_secret_key(tmp_path: Path, key: str) -> None:
    """The interface: set but under 32 bytes (empty included): non-zero exit at once, naming
    the variable, never echoing the key."""
    env = {**os.environ, "MICROFACTORY_MES__SECRET_KEY": key}
    t0 = time.monotonic()
    done = subprocess.run(
        [str(CLI), "mes", "serve", "--port", str(free_port())],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode != 0
    assert time.monotonic() - t0 < 15  # "at once": the CLI's import time, nothing served
    assert "MICROFACTORY_MES__SECRET_KEY" in done.stderr
    assert "Traceback" not in done.stderr
    assert not key or key not in done.stderr
    assert list(tmp_path.iterdir()) == []  # no database made either


# ------------------------------------------------------------------ HTTPS
def _self_signed(tmp: Path) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    cert, key = tmp / "mes.crt", tmp / "mes.key"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.integration
def test_https_with_the_certificate_and_no_plain_http(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    mes = LiveMes(
        MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}"), tls_cert=cert, tls_key=key
    )
    try:
        assert mes.url == f"https://127.0.0.1:{mes.port}"
        trusted = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(f"{mes.url}/api/v1/health", verify=trusted, timeout=10)
        assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{mes.url}/api/v1/health", timeout=10)  # system CAs only: refused
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{mes.port}/api/v1/health", timeout=10)
    finally:
        mes.close()


@pytest.mark.integration
def test_mes_serve_tls_options(tmp_path: Path) -> None:
    """`mes serve --tls-cert --tls-key` prints an https URL and serves it."""
    cert, key = _self_signed(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [
            *(str(CLI), "mes", "serve", "--port", str(port), "--log-level", "warning"),
            *("--db-url", f"sqlite:///{tmp_path / 'mes.sqlite'}"),
            *("--tls-cert", str(cert), "--tls-key", str(key)),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("MICROFACTORY_MES__")},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == f"https://127.0.0.1:{port}", proc.stderr.read() if proc.stderr else ""
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(f"{line}/api/v1/health", verify=trusted, timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)
    assert proc.returncode == 0
    assert (tmp_path / KEY_FILE).exists()  # the key sits beside the database


def test_tls_needs_both_files() -> None:
    with pytest.raises(ValidationError, match="tls_cert and tls_key"):
        MesSettings(tls_cert=Path("a.crt"))


def test_default_bind_is_loopback() -> None:
    assert MesSettings().host == "127.0.0.1"
    unit = (REPO / "deploy" / "systemd" / "microfactory-mes.service").read_text()
    assert "0.0.0.0" not in re.sub(r"#.*", "", unit)
