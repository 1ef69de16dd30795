"""``microfactory demo`` as a user runs it: a subprocess, a duration, exit 0, data stored.

Run against a real InfluxDB 1.x and a real v2 endpoint (VictoriaMetrics) through the
environment overrides, the way a container or systemd unit would point it elsewhere.
"""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.servers import InfluxDB1, VictoriaMetrics

pytestmark = pytest.mark.e2e

MACHINES = {"mill-1", "laser-1", "printer-1", "assembly-1", "meter-1"}


def _demo(data_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "microfactory.cli",
            "demo",
            "--duration",
            "8",
            "--speed",
            "20",
            "--mes-port",
            "0",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _history_machines(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / "history.sqlite") as db:
        return {m for (m,) in db.execute("SELECT DISTINCT machine FROM telemetry")}


def test_demo_into_influxdb_v1(tmp_path: Path, influxdb1: InfluxDB1) -> None:
    env = {"MICROFACTORY_INFLUXDB__URL": influxdb1.url, "MICROFACTORY_INFLUXDB__API": "v1"}
    result = _demo(tmp_path / "demo", env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "stored data from 5 machines" in result.stdout
    tags = influxdb1.query('SHOW TAG VALUES FROM "telemetry" WITH KEY = "machine"', "microfactory")
    assert {v[1] for v in tags[0]["values"]} == MACHINES
    assert _history_machines(tmp_path / "demo") == MACHINES  # the demo keeps its local view
    # the MES base URL is printed on a line of its own
    assert re.search(r"^http://127\.0\.0\.1:\d+$", result.stdout, re.MULTILINE), result.stdout


def test_demo_into_v2_endpoint(tmp_path: Path, victoriametrics: VictoriaMetrics) -> None:
    env = {
        "MICROFACTORY_INFLUXDB__URL": victoriametrics.url,
        "MICROFACTORY_INFLUXDB__API": "v2",
        "MICROFACTORY_INFLUXDB__ORG": "acme",
        "MICROFACTORY_INFLUXDB__BUCKET": "shopfloor",
        "MICROFACTORY_INFLUXDB__TOKEN": "secret",
    }
    result = _demo(tmp_path / "demo", env)
    assert result.returncode == 0, result.stderr[-3000:]
    series = victoriametrics.export('{__name__="telemetry_value"}')
    assert {s["metric"]["machine"] for s in series} == MACHINES
    stored = sum(len(s["values"]) for s in series)
    assert stored > 100


def test_demo_rejects_bad_override(tmp_path: Path) -> None:
    env = {"MICROFACTORY_INFLUXDB__URL": "localhost:8086"}
    result = _demo(tmp_path / "demo", env)
    assert result.returncode == 2
    assert "influxdb.url: expected http://HOST:PORT or https://HOST:PORT" in result.stdout
