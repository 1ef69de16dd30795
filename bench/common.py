"""Shared pieces of the benchmarks: real servers, the gateway as a process, its RSS and CPU."""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def proc_stats(pid: int) -> tuple[float, float]:
    """(peak RSS in MB, CPU seconds user+system) of a live process, from /proc."""
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return hwm, ticks / 100.0


def start_gateway(config: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "microfactory.cli",
            "gateway",
            "--config",
            str(config),
            "--log-level",
            "warning",
        ],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def median_report(name: str, values: list[float], unit: str) -> None:
    if values:
        print(
            f"{name}: median {statistics.median(values):,.1f} {unit} over {len(values)} runs "
            f"({', '.join(f'{v:,.1f}' for v in values)})"
        )


def wait(cond: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.2)
    return False
