"""Logs fit for an SD card, proven through the real CLI (issue 14, item 4).

``microfactory gateway --config site.yaml --log-level info`` in its own process, as systemd
runs it, its output in a file. 500 samples through a real Mosquitto into a real InfluxDB 1.x
add no line (no httpx/httpcore request lines, nothing per write); an OPC UA machine (the
simulator's real asyncua server) switched off for several reconnect attempts gives one line
when it goes and one when it is back, and no traceback. Waits are for data or log lines,
bounded; the line counts are measured, printed, and asserted against fixed small limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from microfactory.sim.workshop import Workshop, WorkshopSettings
from tests.helpers.gateway import (
    GatewayProcess,
    Publisher,
    influx_total,
    site_dict,
    unique_prefix,
    wait_flowing,
    write_config,
)
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for_sync

pytestmark = pytest.mark.integration

DATABASE = "logvolume"
SAMPLES = 500  # 4 machines x 125, in 5 bursts half a second apart
LIBRARY_NOISE = re.compile(r"httpx|httpcore|HTTP Request|HTTP/1\.1", re.IGNORECASE)


@pytest.fixture
def gateway_log(tmp_path: Path) -> Iterator[Callable[[Path], GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(config: Path) -> GatewayProcess:
        gw = GatewayProcess(config, tmp_path / "gateway.log")
        gw.start()
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.close()


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def test_writes_to_influxdb_add_no_log_lines(
    tmp_path: Path,
    mosquitto: Mosquitto,
    influxdb1: InfluxDB1,
    gateway_log: Callable[[Path], GatewayProcess],
) -> None:
    prefix = unique_prefix()
    data = site_dict(
        tmp_path, mosquitto.url, prefix=prefix, influx_url=influxdb1.url, database=DATABASE
    )
    data["influxdb"]["batch_size"] = 50  # many writes: ten at least for the 500 samples
    gw = gateway_log(write_config(tmp_path / "site.yaml", data))
    pub = Publisher(mosquitto.url, prefix)
    try:
        pub.wait_connected()
        wait_flowing(pub, influxdb1, DATABASE, timeout_s=60)
        started = _lines(gw.log_text())
        for _ in range(5):
            pub.publish(SAMPLES // 5 // len(pub.machines))
            time.sleep(0.5)
        pub.wait_all_acked()
        wait_for_sync(
            lambda: influx_total(influxdb1, DATABASE) == SAMPLES, 60, f"{SAMPLES} in InfluxDB"
        )
        assert gw.terminate(20) == 0
    finally:
        pub.close()
    lines = _lines(gw.log_text())
    during = lines[len(started) :]
    print(f"gateway log: {len(started)} lines to first data, {len(lines)} in all")
    print("\n".join(lines))
    assert not [line for line in lines if LIBRARY_NOISE.search(line)], "library request lines"
    assert "Traceback" not in gw.log_text()
    # The writes of 500 samples add nothing; what follows the data is the shutdown only.
    assert len(started) <= 15, started
    assert len(during) <= 6, during


class CountingRelay:
    """TCP relay 127.0.0.1:port -> the machine, counting the gateway's connection attempts
    (each one, also those refused behind it while the machine is off)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.accepted = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:  # the machine is off: the gateway sees its connection closed
            writer.close()
            return
        for t in (self._pipe(reader, up_w), self._pipe(up_r, writer)):
            self._tasks.add(asyncio.create_task(t))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()


async def _wait_log(gw: GatewayProcess, pattern: re.Pattern[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pattern.search(gw.log_text()):
        if gw.proc is not None and gw.proc.poll() is not None:
            raise AssertionError(f"gateway exited:\n{gw.log_text()}")
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern.pattern!r} in the log after {timeout_s} s")
        await asyncio.sleep(0.1)


async def test_a_machine_switched_off_logs_lost_and_back_once(
    tmp_path: Path, gateway_log: Callable[[Path], GatewayProcess]
) -> None:
    ws = Workshop(WorkshopSettings(seed=3, speed=20.0, mqtt_url=None, opcua_ports={"mill-1": 0}))
    await ws.start()
    machine = ws.opcua_server("mill-1")
    relay = CountingRelay(machine.port)
    relay_port = await relay.start()
    data = {
        "site": "logvolume",
        "machines": [{"id": "mill-1"}],
        "adapters": [
            {
                "type": "opcua",
                "name": "mill",
                "machine": "mill-1",
                "endpoint": machine.endpoint.replace(f":{machine.port}/", f":{relay_port}/"),
                "namespace_uri": machine.namespace_uri,
                "publishing_interval_ms": 100,
                "timeout_s": 1,
                "watchdog_s": 0.5,
                "reconnect_max_s": 1,  # an attempt a second while the machine is off
                "trust_on_first_use": True,
                "nodes": [{"node": "s=ActivePower", "signal": "power_active", "unit": "W"}],
            }
        ],
        "local_history": {"enabled": False},
        "spool": {"path": str(tmp_path / "spool.sqlite"), "durability": "normal"},
        "health": {"port": 0},
    }
    gw = gateway_log(write_config(tmp_path / "site.yaml", data))
    try:
        await _wait_log(gw, re.compile(r"mill: connected"), 60)
        before = len(_lines(gw.log_text()))
        await machine.stop()
        await _wait_log(gw, re.compile(r"mill: .*retrying in"), 30)
        attempts_from = relay.accepted
        deadline = time.monotonic() + 30
        while relay.accepted < attempts_from + 5:  # several attempts at the closed machine
            assert time.monotonic() < deadline, f"{relay.accepted - attempts_from} attempts"
            await asyncio.sleep(0.1)
        attempts = relay.accepted - attempts_from
        await machine.start()
        await _wait_log(gw, re.compile(r"mill: connected again"), 60)
        await asyncio.sleep(1)  # the lines that follow a reconnect, if any
        assert gw.terminate(20) == 0
    finally:
        await relay.close()
        await ws.stop()
    text = gw.log_text()
    outage = _lines(text)[before:]
    print(
        f"gateway log: {before} lines to connected, {len(outage)} from the stop to the exit, "
        f"{attempts} reconnect attempts while the machine was off"
    )
    print("\n".join(outage))
    assert "Traceback" not in text
    adapter = [line for line in outage if " mill: " in line]
    lost = [line for line in adapter if "retrying in" in line]
    back = [line for line in adapter if "connected again" in line]
    assert len(lost) == 1, adapter
    assert len(back) == 1, adapter
    assert not [line for line in outage if "asyncua" in line], "library lines at info"
    assert len(outage) <= 8, outage  # lost, back, a gap note at most, and the shutdown
