"""``microfactory sim run`` as a user runs it: a subprocess against a real Mosquitto."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from tests.helpers.servers import Mosquitto


def sim(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "microfactory.cli", "sim", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "COLUMNS": "300", "NO_COLOR": "1"},  # rich must not wrap messages
    )


@pytest.mark.integration
def test_run_prints_endpoints_and_topics_and_writes_the_truth(
    mosquitto: Mosquitto, tmp_path: Path
) -> None:
    truth = tmp_path / "truth"
    done = sim(
        "run", "--duration", "2", "--speed", "600", "--seed", "3",
        "--mqtt-url", mosquitto.url,
        "--opcua-port", "mill-1=0", "--opcua-port", "laser-1=0", "--modbus-port", "0",
        "--truth-dir", str(truth),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "opc.tcp://127.0.0.1:" in out and "/microfactory/mill-1" in out
    assert "urn:microfactory:sim:laser-1" in out
    assert re.search(r"Modbus eastron_sdm120 at 127\.0\.0\.1:\d+ unit 1 \(its energy meter\)", out)
    for topic in (
        "microfactory/sim/printer-1/telemetry",
        "microfactory/sim/assembly-1/status",
        "microfactory/sim/meter-1/+",
    ):
        assert topic in out
    summary = orjson.loads((truth / "summary.json").read_bytes())
    assert summary["seed"] == 3
    assert set(summary["machines"]) == {"mill-1", "laser-1", "printer-1", "assembly-1", "meter-1"}
    assert (truth / "parts.jsonl").stat().st_size > 0


def test_bad_options_are_named() -> None:
    done = sim("run", "--opcua-port", "mill-1:4840", "--mqtt-url", "none", "--duration", "0")
    assert done.returncode == 2
    assert "MACHINE=PORT" in done.stderr
    done = sim("run", "--mqtt-url", "http://broker", "--duration", "0")
    assert done.returncode == 2
    assert "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'http://broker'" in done.stderr
