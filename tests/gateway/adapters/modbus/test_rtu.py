"""Modbus RTU: pymodbus's serial server on one end of a socat pty pair, the adapter on the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.testing import wait_until
from tests.helpers.markers import starts_server
from tests.helpers.modbus_server import ModbusRtuTestServer, ModbusStore, pty_pair

from .conftest import MakeAdapter
from .test_tcp import TEST_MAP, fill_test_meter, has, latest

pytestmark = pytest.mark.integration


@pytest.fixture
@starts_server("socat pseudo-terminal pair")
def ptys(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    with pty_pair(tmp_path) as pair:
        yield pair


@pytest.fixture
@starts_server("pymodbus Modbus RTU server on a pty")
async def rtu_server(
    ptys: tuple[Path, Path], store: ModbusStore
) -> AsyncIterator[ModbusRtuTestServer]:
    server = ModbusRtuTestServer(store, str(ptys[0]), baudrate=19200, parity="N")
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def rtu(port: Path, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "type": "modbus",
        "name": "bus",
        "transport": "rtu",
        "serial_port": str(port),
        "baudrate": 19200,
        "parity": "N",  # a pty refuses parity settings (EINVAL); a real RS-485 adapter takes E
        "poll_interval_ms": 200,
        "timeout_s": 0.5,
        "reconnect_max_s": 1,
    }
    base.update(kw)
    return base


async def test_two_meters_on_one_rtu_bus(
    ptys: tuple[Path, Path],
    rtu_server: ModbusRtuTestServer,
    store: ModbusStore,
    make_adapter: MakeAdapter,
) -> None:
    fill_test_meter(store, unit=1)
    fill_test_meter(store, unit=3)
    store.set_float32(3, "input", 0x48, 42.0)
    devices = [
        {"unit_id": 1, "machine": "press-1", "meter": TEST_MAP},
        {"unit_id": 3, "machine": "lathe-1", "meter": TEST_MAP},
    ]
    adapter, emitter = make_adapter(rtu(ptys[1], devices=devices, stale_after_s=1.5))
    await adapter.start()
    try:
        await has(emitter, ("press-1", "energy_active"), ("lathe-1", "energy_active"))
        got = latest(emitter)
        assert got[("press-1", "voltage_l1")].value == 230.5
        assert got[("press-1", "energy_active")].value == 1234.5
        assert got[("lathe-1", "energy_active")].value == 42.0
        # a meter cut off the bus: stale, while the other is still read
        store.unplug(3)
        await wait_until(lambda: emitter.device_state("unit 3") == "stale", 10, "unit 3 stale")
        count = sum(1 for s in emitter.samples if s.machine == "press-1")
        await asyncio.sleep(1)
        assert sum(1 for s in emitter.samples if s.machine == "press-1") > count
        store.unplug(3, unplugged=False)
        await wait_until(lambda: emitter.device_state("unit 3") == "live", 10, "unit 3 back")
    finally:
        await adapter.stop(2)
    assert [g.machine for g in emitter.gaps] == ["lathe-1"]
    assert not emitter.violations and not emitter.refused


async def test_a_missing_serial_port_is_said_and_retried(
    tmp_path: Path, make_adapter: MakeAdapter, caplog: pytest.LogCaptureFixture
) -> None:
    adapter, emitter = make_adapter(rtu(tmp_path / "ttyUSB9", machine="press-1", meter=TEST_MAP))
    await adapter.start()
    try:
        await wait_until(lambda: adapter.supervisor.failures >= 2, 10, "two connect attempts")
    finally:
        await adapter.stop(2)
    assert "connected" not in emitter.states
    assert any("ttyUSB9 does not exist" in r.getMessage() for r in caplog.records)


async def test_the_serial_port_vanishes_and_comes_back(
    tmp_path: Path, store: ModbusStore, make_adapter: MakeAdapter
) -> None:
    """The USB adapter unplugged and plugged in again: reconnect, and a gap for the time away."""
    fill_test_meter(store, unit=1)
    folder = tmp_path / "dev"
    folder.mkdir()
    adapter, emitter = make_adapter(rtu(folder / "ttyB", machine="press-1", meter=TEST_MAP))
    with pty_pair(folder) as (server_end, _):
        server = ModbusRtuTestServer(store, str(server_end), baudrate=19200)
        await server.start()
        await adapter.start()
        try:
            await has(emitter, ("press-1", "energy_active"))
        finally:
            await server.stop()
    try:
        await wait_until(lambda: emitter.states[-1] != "connected", 15, "the port gone noticed")
        with pty_pair(folder) as (server_end, _):
            server = ModbusRtuTestServer(store, str(server_end), baudrate=19200)
            await server.start()
            try:
                await wait_until(lambda: emitter.gaps != [], 20, "a gap after the port is back")
                count = emitter.count()
                await wait_until(lambda: emitter.count() > count + 3, 10, "data again")
            finally:
                await server.stop()
    finally:
        await adapter.stop(2)
    assert [g.machine for g in emitter.gaps] == ["press-1"]
    assert not emitter.violations
