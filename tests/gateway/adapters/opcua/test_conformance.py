"""The OPC UA adapter passes the conformance kit against a real asyncua server.

The counterpart is an asyncua ``Server`` started by the test on a free port of 127.0.0.1,
offering only Basic256Sha256 SignAndEncrypt (the adapter's default), writing a power and a
state value every 0.1 s; the bad payload is a NaN power reading. The adapter trusts the
server's certificate on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.common.node import Node
from asyncua.server.server import Server

from microfactory.cli.ports import free_port
from microfactory.gateway.adapters.opcua import plugin
from microfactory.gateway.adapters.opcua.certificates import create_certificate
from microfactory.gateway.testing import AdapterConformance, BadConfig

pytestmark = pytest.mark.integration
NAMESPACE = "urn:microfactory:test:press"


class PressServer:
    """An OPC UA server for machine ``press-1``; stops and starts again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"opc.tcp://127.0.0.1:{self.port}/press"
        self._server: Server | None = None
        self._power: Node | None = None
        self._state: Node | None = None
        self._writer: asyncio.Task[None] | None = None
        self._bad = False

    def adapter_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "opcua",
            "name": name,
            "machine": "press-1",
            "endpoint": self.endpoint,
            "namespace_uri": NAMESPACE,
            "publishing_interval_ms": 50,
            "timeout_s": 1,
            "watchdog_s": 0.3,
            "reconnect_max_s": 1,
            "trust_on_first_use": True,
            "nodes": [
                {"node": "s=Power", "signal": "power_active", "unit": "kW"},
                {"node": "s=State", "signal": "state", "mode": "poll", "poll_interval_ms": 200},
            ],
        }

    async def start(self) -> None:
        if self._server is None:
            server = Server()
            await server.init()
            server.set_endpoint(self.endpoint)
            uri = "urn:microfactory:test:press:server"
            pki = Path(tempfile.mkdtemp(prefix="press-pki-"))
            cert, key = create_certificate(pki, application_uri=uri, host="127.0.0.1", server=True)
            await server.set_application_uri(uri)
            await server.load_certificate(str(cert))
            await server.load_private_key(str(key))
            server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            idx = await server.register_namespace(NAMESPACE)
            press = await server.nodes.objects.add_object(idx, "Press")
            self._power = await press.add_variable(
                ua.NodeId(ua.String("Power"), ua.Int16(idx)), "Power", 0.0
            )
            self._state = await press.add_variable(
                ua.NodeId(ua.String("State"), ua.Int16(idx)), "State", "running"
            )
            self._server = server
        await self._server.start()
        self._writer = asyncio.create_task(self._write())

    async def _write(self) -> None:
        assert self._power is not None and self._state is not None
        n = 0
        while True:
            n += 1
            value = math.nan if self._bad else 3.0 + n % 7 / 10
            self._bad = False
            await self._power.write_value(ua.Variant(value, ua.VariantType.Double))
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
            self._writer = None
            assert self._server is not None
            await self._server.stop()

    async def send_bad_payload(self) -> None:
        self._bad = True


GOOD = PressServer().adapter_config("press")
NODE = GOOD["nodes"][0]


class TestOpcUaConformance(AdapterConformance):
    plugin = plugin
    machines = frozenset({"press-1"})
    bad_configs = (
        BadConfig({**GOOD, "endpoint": "http://press:4840"}, "endpoint"),
        BadConfig({**GOOD, "nodes": [{**NODE, "node": "ns=2;s=Power"}]}, "nodes[0].node"),
        BadConfig({**GOOD, "nodes": [{**NODE, "unit": "bar"}]}, "nodes[0].unit"),
        BadConfig({**GOOD, "nodes": []}, "nodes"),
        BadConfig({**GOOD, "timeout_s": 0}, "timeout_s"),
        BadConfig({**GOOD, "nodes": [{**NODE, "mode": "push"}]}, "nodes[0].mode"),
        BadConfig({**GOOD, "watchdog": 1}, "watchdog", id="unknown field"),
    )

    @pytest.fixture
    def counterpart(self) -> PressServer:
        return PressServer()
