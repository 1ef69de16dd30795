"""OPC UA: the machine's server restarted, then its port blackholed; the adapter heals.

The gateway talks to the simulator through a small TCP relay so that the test can blackhole
the port: connections stay open, but no byte gets through (a pulled cable, a dead switch).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from microfactory.gateway.adapters.opcua.adapter import OpcUaAdapter
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.sim.workshop import Workshop, WorkshopSettings
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.faults


class Relay:
    """TCP relay 127.0.0.1:port -> target; ``blackhole`` swallows every byte both ways."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.blackhole = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                if not self.blackhole:
                    writer.write(data)
                    await writer.drain()
        writer.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blackhole:  # accept, then never answer
            self._tasks.add(asyncio.create_task(self._pipe(reader, writer)))
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        for t in (self._pipe(reader, up_w), self._pipe(up_r, writer)):
            self._tasks.add(asyncio.create_task(t))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for t in self._tasks:
            t.cancel()


def _server_subscriptions(ws: Workshop) -> set[int]:
    """Subscription ids the machine's server holds (an orphan lives on until its lifetime
    runs out, as OPC UA wants: the server cannot tell a dead client from a slow one)."""
    server = ws.opcua_server("mill-1")._server
    assert server is not None
    return set(server.iserver.subscription_service.subscriptions)


async def test_opcua_server_restart_and_blackhole(tmp_path: Path) -> None:
    ws = Workshop(
        WorkshopSettings(seed=3, speed=20.0, mqtt_url=None, opcua_ports={"mill-1": 0, "laser-1": 0})
    )
    await ws.start()
    machine = ws.opcua_server("mill-1")
    relay = Relay(machine.port)
    relay_port = await relay.start()
    endpoint = machine.endpoint.replace(f":{machine.port}/", f":{relay_port}/")
    data = {
        "site": "faults",
        "machines": [{"id": "mill-1"}],
        "adapters": [
            {
                "type": "opcua",
                "name": "mill",
                "machine": "mill-1",
                "endpoint": endpoint,
                "namespace_uri": machine.namespace_uri,
                "publishing_interval_ms": 100,
                "timeout_s": 2,
                "watchdog_s": 0.5,
                "reconnect_max_s": 2,
                "trust_on_first_use": True,
                "nodes": [
                    {"node": "s=ActivePower", "signal": "power_active", "unit": "W"},
                    {"node": "s=SpindleSpeed", "signal": "spindle_speed", "unit": "rpm"},
                ],
            }
        ],
        "local_history": {"enabled": True, "path": str(tmp_path / "history.sqlite")},
        "spool": {"path": str(tmp_path / "spool.sqlite"), "durability": "normal"},
        "health": {"port": 0},
    }
    gw = Gateway(parse_site_config(data, "faults"))
    await gw.start()
    adapter = gw.adapters[0]
    assert isinstance(adapter, OpcUaAdapter)
    try:
        await wait_for(lambda: gw.health.connections.get("mill") == "connected", 20, "connect")
        await wait_for(lambda: gw.health.spooled >= 20, 20, "data flowing")
        assert adapter.sessions == 1 and len(_server_subscriptions(ws)) == 1
        known = _server_subscriptions(ws)

        # 1. the machine's server restarts
        await machine.stop()
        await wait_for(lambda: gw.health.connections["mill"] != "connected", 20, "noticed")
        await asyncio.sleep(1.0)
        await machine.start()
        before = gw.health.spooled
        await wait_for(lambda: gw.health.connections["mill"] == "connected", 30, "reconnected")
        await wait_for(lambda: gw.health.spooled >= before + 20, 30, "data flowing again")
        assert gw.health.gaps == 1
        assert adapter.sessions == 2
        new = _server_subscriptions(ws) - known
        assert len(new) == 1, f"{len(new)} subscriptions created on reconnect, expected 1"
        known |= new

        # 2. the network blackholes the port: nothing closes, nothing arrives
        relay.blackhole = True
        await wait_for(lambda: gw.health.connections["mill"] != "connected", 20, "watchdog")
        await asyncio.sleep(3.0)  # a few reconnect attempts into the void
        relay.blackhole = False
        recovered = asyncio.get_running_loop().time()
        before = gw.health.spooled
        await wait_for(lambda: gw.health.connections["mill"] == "connected", 30, "reconnected")
        await wait_for(lambda: gw.health.spooled >= before + 20, 30, "data flowing again")
        assert asyncio.get_running_loop().time() - recovered < 30
        assert gw.health.gaps == 2
        assert gw.pipeline is not None
        gap = gw.pipeline.last[("mill-1", "gap")]
        assert isinstance(gap.value, str) and gap.value  # the reason, in words
        new = _server_subscriptions(ws) - known
        assert len(new) == 1, f"{len(new)} subscriptions created on reconnect, expected 1"
        assert adapter.sessions == 3
        assert not gw.health.dead_lettered
    finally:
        await gw.stop(timeout_s=10)
        await relay.close()
        await ws.stop()
