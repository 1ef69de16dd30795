"""Fixtures of the Modbus adapter tests: a real pymodbus server and an adapter factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.adapters.modbus import ModbusAdapterConfig
from microfactory.gateway.adapters.modbus.adapter import ModbusAdapter
from microfactory.gateway.sdk import AdapterContext
from microfactory.gateway.testing import RecordingEmitter
from tests.helpers.markers import starts_server
from tests.helpers.modbus_server import ModbusStore, ModbusTcpTestServer

MACHINES = frozenset({"press-1", "lathe-1", "saw-1"})
MakeAdapter = Callable[[dict[str, Any]], tuple[ModbusAdapter, RecordingEmitter]]


@pytest.fixture
def store() -> ModbusStore:
    """The datastore of units 1, 2 and 3, empty (every register reads 0)."""
    return ModbusStore(units=(1, 2, 3))


@pytest.fixture
@starts_server("pymodbus Modbus TCP server")
async def modbus_tcp(store: ModbusStore) -> AsyncIterator[ModbusTcpTestServer]:
    """``store`` served on a free port of 127.0.0.1."""
    server = ModbusTcpTestServer(store)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def make_adapter(tmp_path: Path) -> Iterator[MakeAdapter]:
    """Build adapters from config dicts (validated as the site file would be)."""

    def make(data: dict[str, Any]) -> tuple[ModbusAdapter, RecordingEmitter]:
        config = ModbusAdapterConfig.model_validate(data)
        emitter = RecordingEmitter(adapter=config.name, machines=MACHINES)
        context = AdapterContext(
            site="test",
            machines=MACHINES,
            emitter=emitter,
            logger=logging.getLogger(f"microfactory.test.modbus.{config.name}"),
            state_dir=tmp_path,
        )
        return ModbusAdapter(config, context), emitter

    yield make
