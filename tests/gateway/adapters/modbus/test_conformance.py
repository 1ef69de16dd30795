"""The Modbus adapter passes the conformance kit against a real pymodbus TCP server.

The counterpart is :class:`ModbusTcpTestServer` on a free port of 127.0.0.1 serving one
meter (unit 1, the test map) whose energy counter a writer task advances every 0.1 s; the
bad payload is a NaN power reading, which the adapter leaves out and dead-letters once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.adapters.modbus import plugin
from microfactory.gateway.testing import AdapterConformance, BadConfig
from tests.helpers.modbus_server import ModbusStore, ModbusTcpTestServer

from .test_tcp import TEST_MAP, fill_test_meter

pytestmark = pytest.mark.integration

GOOD: dict[str, Any] = {
    "type": "modbus",
    "name": "conformance",
    "host": "127.0.0.1",
    "machine": "press-1",
    "meter": TEST_MAP,
}


class MeterServer:
    """One simulated meter; stops and starts again on the same port."""

    def __init__(self) -> None:
        self.store = ModbusStore(units=(1,))
        fill_test_meter(self.store)
        self.server = ModbusTcpTestServer(self.store)
        self._writer: asyncio.Task[None] | None = None
        self._energy = 1000.0

    def adapter_config(self, name: str) -> dict[str, Any]:
        return {
            **GOOD,
            "name": name,
            "port": self.server.port,
            "poll_interval_ms": 100,
            "timeout_s": 0.5,
            "reconnect_max_s": 1,
        }

    async def _write(self) -> None:
        while True:
            self._energy += 0.01
            self.store.set_float32(1, "input", 0x48, self._energy)
            await asyncio.sleep(0.1)

    async def start(self) -> None:
        await self.server.start()
        if self._writer is None:
            self._writer = asyncio.create_task(self._write())

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
        await self.server.stop()

    async def send_bad_payload(self) -> None:
        self.store.set_float32(1, "input", 0x0C, math.nan)


class TestConformance(AdapterConformance):
    plugin = plugin
    machines = frozenset({"press-1"})
    bad_configs = (
        BadConfig({**GOOD, "meter": "no_such_meter"}, "meter", id="unknown-map"),
        BadConfig({**GOOD, "host": None}, "host", id="tcp-without-host"),
        BadConfig({**GOOD, "transport": "rtu", "host": None}, "serial_port", id="rtu-without-port"),
        BadConfig(
            {**GOOD, "registers": [{"address": 0, "signal": "x", "type": "bool"}]},
            "registers[0]",
            id="bool-on-a-register",
        ),
        BadConfig(
            {**GOOD, "registers": [{"address": 0, "signal": "power_active", "unit": "degC"}]},
            "registers[0].unit",
            id="unit",
        ),
        BadConfig({**GOOD, "parity": "X"}, "parity"),
        BadConfig({**GOOD, "meter": str(Path("/nonexistent/map.yaml"))}, "meter", id="no-file"),
    )

    @pytest.fixture
    def counterpart(self) -> MeterServer:
        return MeterServer()
