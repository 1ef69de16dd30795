"""The docs tell the truth: their examples load, their tables match the code, and the example
adapter of docs/writing-an-adapter.md collects data through a real gateway.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sqlite3
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from microfactory.gateway import sdk
from microfactory.gateway.adapters import adapter_plugins
from microfactory.gateway.config import load_site_config, parse_site_config
from microfactory.gateway.runtime import Gateway
from tests.helpers.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
EXAMPLE_YAMLS = sorted(EXAMPLES.glob("*.yaml"))


@pytest.fixture
def example_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Install the example adapter the way an integrator's package does: an entry point.

    A minimal ``*.dist-info`` on ``sys.path`` declares ``http_json`` in the
    ``microfactory.adapters`` group, exactly what ``pip install`` of a package with that
    entry point leaves behind; the gateway then finds it like any third-party adapter.
    """
    site = tmp_path / "site-packages"
    info = site / "microfactory_docs_example-0.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: microfactory-docs-example\nVersion: 0.0.0\n"
    )
    (info / "entry_points.txt").write_text(
        "[microfactory.adapters]\nhttp_json = example_adapter:plugin\n"
    )
    monkeypatch.syspath_prepend(str(EXAMPLES))
    monkeypatch.syspath_prepend(str(site))
    for name in list(os.environ):
        if name.upper().startswith("MICROFACTORY_"):
            monkeypatch.delenv(name)  # the examples must hold on their own
    adapter_plugins.cache_clear()
    yield
    adapter_plugins.cache_clear()
    sys.modules.pop("example_adapter", None)


def test_examples_exist() -> None:
    assert len(EXAMPLE_YAMLS) >= 6, f"docs/examples/*.yaml missing: found {EXAMPLE_YAMLS}"


@pytest.mark.parametrize("path", EXAMPLE_YAMLS, ids=[p.name for p in EXAMPLE_YAMLS])
@pytest.mark.usefixtures("example_adapter")
def test_example_config_is_valid(path: Path) -> None:
    site = load_site_config(path)  # raises ConfigError naming every problem
    assert site.machines, f"{path.name} declares no machine"


def _site_blocks(doc: Path) -> list[str]:
    """The ```yaml blocks of a Markdown file that are whole site configs (have machines)."""
    blocks: list[str] = []
    lines: list[str] = []
    inside = False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if not inside and line.strip() == "```yaml":
            inside, lines = True, []
        elif inside and line.strip() == "```":
            inside = False
            text = "\n".join(lines)
            if text.lstrip().startswith("site:") or "\nmachines:" in text:
                blocks.append(text)
        elif inside:
            lines.append(line)
    return blocks


PROSE = [ROOT / "README.md", DOCS / "modbus.md", DOCS / "sparkplug.md", DOCS / "mqtt.md"]


@pytest.mark.parametrize("doc", [d for d in PROSE if d.exists()], ids=lambda d: d.name)
def test_site_configs_in_the_prose_are_valid(doc: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MICROFACTORY_"):
            monkeypatch.delenv(name)
    blocks = _site_blocks(doc)
    assert blocks, f"{doc.name} shows no whole site config"
    for i, text in enumerate(blocks):
        data = yaml.safe_load(text)
        site = parse_site_config(data, f"{doc.name} site config #{i + 1}")
        assert site.machines


def test_generated_docs_are_current() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_config_reference", DOCS / "gen_config_reference.py"
    )
    assert spec is not None and spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    assert generator.main(["--check"]) == 0, (
        "docs tables or embedded examples are stale: run "
        ".venv/bin/python docs/gen_config_reference.py"
    )


# ------------------------------------------------------------------ the example adapter, for real
class _Device:
    """A tiny HTTP energy meter: answers GET /status.json following ``script`` in turn.

    ``ok`` answers good JSON, ``garbage`` answers a body that is not JSON, ``down`` answers 503;
    after the script it keeps answering ``ok``.
    """

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.served: list[tuple[str, int | None]] = []  # (kind, ts in ms)
        self.lock = threading.Lock()
        device = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with device.lock:
                    n = len(device.served)
                    kind = device.script[n] if n < len(device.script) else "ok"
                    ts_ms = time.time_ns() // 1_000_000 if kind == "ok" else None
                    device.served.append((kind, ts_ms))
                if kind == "down":
                    self.send_response(503)
                    self.end_headers()
                    return
                body = (
                    json.dumps(
                        {
                            "ts": ts_ms,
                            "power": {"kw": 3.2},
                            "energy_kwh": 15234.5 + n,
                            "state": "running",
                        }
                    ).encode()
                    if kind == "ok"
                    else b"<html>busy</html>"
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/status.json"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _Device:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, kind: str) -> int:
        with self.lock:
            return sum(1 for k, _ in self.served if k == kind)


@pytest.mark.integration  # a real gateway polling an HTTP device on 127.0.0.1
@pytest.mark.usefixtures("example_adapter")
async def test_example_adapter_collects_through_a_real_gateway(tmp_path: Path) -> None:
    script = ["ok", "ok", "garbage", "ok", "down", "down", "ok", "ok"]
    with _Device(script) as device:
        data = yaml.safe_load((EXAMPLES / "http_json.yaml").read_text())
        adapter = data["adapters"][0]
        adapter.update(url=device.url, interval_s=0.05, reconnect_max_s=0.2)
        data["spool"] = {"path": str(tmp_path / "spool.sqlite")}
        data["local_history"] = {"path": str(tmp_path / "history.sqlite")}
        site = parse_site_config(data, "http_json.yaml")
        assert site.history_enabled

        gw = Gateway(site)
        await gw.start()
        try:
            await wait_for(
                lambda: device.count("ok") >= 8 and gw.health.gaps >= 1,
                20,
                "eight good answers and a gap from the example adapter",
            )
        finally:
            await gw.stop(10)
        assert gw.health.connections["meter-2-http"] == "stopped"

    ok_ts = {ts for kind, ts in device.served if kind == "ok"}
    with sqlite3.connect(tmp_path / "history.sqlite") as db:
        rows = db.execute(
            "SELECT signal, ts_ns, value, text, unit, quality FROM telemetry"
        ).fetchall()
    by_signal: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        by_signal.setdefault(row[0], []).append(row)

    # Every good answer is stored, at the device's own time, converted to canonical units.
    for signal in ("power_active", "energy_active", "state"):
        stored = {ts // 1_000_000 for _, ts, *_ in by_signal.get(signal, [])}
        assert stored == ok_ts, f"{signal}: stored times differ from the answers served"
    assert {(r[2], r[4]) for r in by_signal["power_active"]} == {(3200.0, "W")}, (
        "3.2 kW must be stored as 3200 W"
    )
    assert all(r[4] == "Wh" and r[2] > 15_234_000 for r in by_signal["energy_active"])
    assert {r[3] for r in by_signal["state"]} == {"running"}

    # The outage is reported as a gap marker (quality bad), not silence.
    gaps = by_signal.get("gap", [])
    assert len(gaps) == 1, f"expected one gap marker, got {gaps}"
    assert gaps[0][5] == "bad" and gaps[0][3].startswith("HTTPStatusError")

    # The answer that was not JSON is a dead letter with its reason, and did not stop anything.
    with sqlite3.connect(tmp_path / "spool.sqlite") as db:
        dead = db.execute("SELECT source, origin, reason FROM dead_letters").fetchall()
    assert len(dead) == 1, f"expected one dead letter, got {dead}"
    source, origin, reason = dead[0]
    assert (source, origin) == ("meter-2-http", device.url)
    assert reason.startswith("answer is not valid JSON"), reason


def test_the_sdk_table_of_writing_an_adapter_lists_the_whole_sdk() -> None:
    doc = (DOCS / "writing-an-adapter.md").read_text(encoding="utf-8")
    table = doc[doc.index("| name | what it is |") : doc.index("```python")]
    listed = set(re.findall(r"`([A-Za-z_]+)`", table)) | {"API_VERSION"}  # said in the text
    assert set(sdk.__all__) <= listed, f"not in the table: {sorted(set(sdk.__all__) - listed)}"
