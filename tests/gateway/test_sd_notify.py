"""systemd notify and /healthz against a real in-process gateway and a real datagram socket.

The test binds the socket systemd would (NOTIFY_SOCKET, WATCHDOG_USEC), runs a gateway, blocks
its event loop to stall the pipeline, and reads what the gateway said.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.healthz import Thresholds
from microfactory.gateway.runtime import Gateway


def _site(tmp: Path) -> dict[str, object]:
    return {
        "site": "notify",
        "machines": [{"id": "m1"}],
        "local_history": {"enabled": True, "path": str(tmp / "history.sqlite")},
        "spool": {"path": str(tmp / "spool.sqlite"), "durability": "normal"},
        "health": {"port": 0},
    }


def _read(sock: socket.socket, until: str, limit_s: float = 20.0) -> list[str]:
    """Datagrams received until one contains ``until`` (bounded by ``limit_s``)."""
    got: list[str] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if until in got[-1]:
            return got
    raise AssertionError(f"no {until!r} within {limit_s} s, got {got}")


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode()
            code = r.status
    except urllib.error.HTTPError as err:
        body, code = err.read().decode(), err.code
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body


@pytest.mark.parametrize("abstract", [False, True])
async def test_ready_watchdog_only_while_moving_stopping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, abstract: bool
) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    name = f"@mf-notify-{time.monotonic_ns()}" if abstract else str(tmp_path / "notify.sock")
    sock.bind("\0" + name[1:] if abstract else name)
    sock.settimeout(0.2)
    monkeypatch.setenv("NOTIFY_SOCKET", name)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping every 0.2 s
    gw = Gateway(parse_site_config(_site(tmp_path), "notify"))
    await gw.start()
    try:
        got = await asyncio.to_thread(_read, sock, "READY=1")
        await asyncio.to_thread(_read, sock, "WATCHDOG=1")
        await asyncio.to_thread(_read, sock, "WATCHDOG=1")
        assert gw.metrics is not None
        base = gw.metrics.url.removesuffix("/metrics")
        code, body = await asyncio.to_thread(_get, f"{base}/healthz")
        assert code == 200 and isinstance(body, dict) and body["status"] == "ok", body
        assert (await asyncio.to_thread(_get, f"{base}/nope"))[0] == 404
        code, text = await asyncio.to_thread(_get, gw.metrics.url)
        assert code == 200 and "microfactory_gateway_spooled" in str(text)
        gw.check.thresholds = Thresholds(task_stall_s=1.0)
        # the event loop blocked: the pipeline's beat ages, the pings must stop
        time.sleep(1.5)  # noqa: ASYNC251  # blocking the loop is the point
        while True:  # drain what was sent before the stall was visible
            try:
                sock.recv(4096)
            except TimeoutError:
                break
        stalled: list[str] = []
        t_end = time.monotonic() + 2.0
        while time.monotonic() < t_end:
            with contextlib.suppress(TimeoutError):
                stalled.append(sock.recv(4096).decode())
        code, body = _get(f"{base}/healthz")  # answered while the loop is blocked
        assert not any("WATCHDOG=1" in m for m in stalled), stalled
        assert code == 503 and isinstance(body, dict) and body["status"] == "down"
        assert "task_stalled" in [r["name"] for r in body["reasons"]]
        # the loop runs again: pings resume
        await asyncio.to_thread(_read, sock, "WATCHDOG=1")
        gw.check.thresholds = Thresholds()
    finally:
        await gw.stop(timeout_s=2)
    rest = await asyncio.to_thread(_read, sock, "STOPPING=1")
    assert "READY=1" in got[-1] and rest
    sock.close()
