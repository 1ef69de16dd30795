"""``microfactory mes`` commands and the MES inside ``microfactory demo``."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from microfactory.cli import app
from microfactory.cli.ports import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_docs_schemas_are_current() -> None:
    result = CliRunner().invoke(
        app, ["mes", "schemas", "--check", "--doc", str(ROOT / "docs/mes.md")]
    )
    assert result.exit_code == 0, result.output


def test_seed_is_idempotent_and_create_user_refuses_weak_passwords(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'mes.sqlite'}"
    runner = CliRunner()
    for _ in range(2):
        result = runner.invoke(app, ["mes", "seed", "--db-url", url, "--start-batches"])
        assert result.exit_code == 0, result.output
    assert "demo data in sqlite" in result.output
    weak = runner.invoke(
        app,
        ["mes", "create-user", "bob", "--role", "manager", "--db-url", url],
        input="admin\nadmin\n",
    )
    assert weak.exit_code == 2 and "at least 10 characters" in weak.output
    common = runner.invoke(
        app,
        ["mes", "create-user", "bob", "--role", "manager", "--db-url", url],
        input="password123\npassword123\n",
    )
    assert common.exit_code == 2 and "list of known passwords" in common.output
    ok = runner.invoke(
        app,
        ["mes", "create-user", "bob", "--role", "manager", "--db-url", url],
        input="long-enough-secret\nlong-enough-secret\n",
    )
    assert ok.exit_code == 0 and "created (manager)" in ok.output
    bad_role = runner.invoke(
        app,
        ["mes", "create-user", "eve", "--role", "boss", "--db-url", url],
        input="long-enough-secret\nlong-enough-secret\n",
    )
    assert bad_role.exit_code == 2 and "expected operator, manager or admin" in bad_role.output


@pytest.mark.e2e
def test_demo_prints_the_mes_url_and_serves_numbers(tmp_path: Path) -> None:
    """`microfactory demo` with the embedded broker: the MES is up with data flowing in."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MICROFACTORY_MQTT__URL", None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microfactory.cli",
            "demo",
            "--duration",
            "22",
            "--speed",
            "30",
            "--data-dir",
            str(tmp_path / "demo"),
            "--mes-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=tmp_path,
    )
    assert proc.stdout is not None
    url = None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while url is None and time.monotonic() < deadline:
        line = proc.stdout.readline().decode(errors="replace")
        if not line:
            break
        lines.append(line)
        if re.fullmatch(r"http://127\.0\.0\.1:\d+\s*", line):
            url = line.strip()
    try:
        assert url == f"http://127.0.0.1:{port}", "".join(lines)
        auth = ("manager", "manager")
        with httpx.Client(base_url=f"{url}/api/v1", auth=auth, timeout=10) as api:
            assert api.get("/health").json()["mqtt"] == "connected"
            runs = api.get("/runs", params={"status": "running"}).json()["items"]
            assert {r["machine_id"] for r in runs} == {
                "laser-1",
                "mill-1",
                "printer-1",
                "assembly-1",
            }
            deadline = time.monotonic() + 15
            parts: list[dict[str, object]] = []
            while time.monotonic() < deadline:
                parts = api.get("/parts", params={"machine_id": "laser-1"}).json()["items"]
                if any(p["energy_wh"] for p in parts if p["run_id"]):
                    break
                time.sleep(1)
            assert any(p["energy_wh"] for p in parts if p["run_id"]), parts
            order = api.get("/orders").json()["items"][0]
            progress = api.get(f"/orders/{order['id']}/progress").json()
            assert progress["code"] == "SO-1001" and progress["batches"]
            assert api.get("/users", auth=("admin", "admin")).status_code == 200
    finally:
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, "".join(lines) + out.decode(errors="replace")
