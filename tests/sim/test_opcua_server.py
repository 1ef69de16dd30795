"""The OPC UA machines seen by a real asyncua client: address space, timestamps, counters."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.object_ids import ObjectIds

from microfactory.sim.machines import LASER, MILL
from microfactory.sim.opcua_machine import COMMON_VARIABLES, GAUGE_VARIABLES
from microfactory.sim.truth import load_truth
from microfactory.sim.workshop import Workshop

from .util import T0, settings

pytestmark = pytest.mark.integration  # each test starts OPC UA servers

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
CURRENT_TIME = f"i={ObjectIds.Server_ServerStatus_CurrentTime}"


def to_ns(dt: datetime | None) -> int:
    assert dt is not None, "no timestamp"
    aware = dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    delta = aware - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


class Changes:
    """Subscription handler collecting (value, source timestamp) per node id."""

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[Any, int]]] = {}

    def datachange_notification(self, node: Node, val: Any, data: Any) -> None:
        dv = data.monitored_item.Value
        ts = to_ns(dv.SourceTimestamp)
        self.values.setdefault(str(node.nodeid.Identifier), []).append((val, ts))


async def machine_node(client: Client, uri: str) -> tuple[int, Node]:
    """Find ``Objects/Machine`` by namespace URI and browse name, never by a fixed index."""
    idx = await client.get_namespace_index(uri)
    for child in await client.nodes.objects.get_children():
        name = await child.read_browse_name()
        if name.NamespaceIndex == idx and name.Name == "Machine":
            return idx, child
    raise AssertionError(f"no Objects/Machine in namespace {uri}")


async def test_address_space_is_browsable_by_namespace_uri_before_the_clock_runs(
    tmp_path: Path,
) -> None:
    ws = Workshop(settings(tmp_path / "truth", speed=3600.0))
    await ws.start(paused=True)
    try:
        assert ws.servers_running and not ws.running
        assert ws.origin_ns == T0
        for machine, kind in (("mill-1", "cnc_mill"), ("laser-1", "laser_cutter")):
            server = ws.opcua_server(machine)
            assert server.namespace_uri == f"urn:microfactory:sim:{machine}"
            async with Client(ws.opcua_endpoints[machine], timeout=5) as client:
                idx, node = await machine_node(client, server.namespace_uri)
                names = {(await c.read_browse_name()).Name for c in await node.get_children()}
                expected = {n for n, _ in COMMON_VARIABLES} | set(GAUGE_VARIABLES[kind])
                assert names == expected, f"{machine}: address space differs: {names ^ expected}"
                state = await client.get_node(f"ns={idx};s=State").read_data_value()
                assert state.Value is not None and state.Value.Value == "setup", (
                    "a paused machine shows its first state"
                )
                assert to_ns(state.SourceTimestamp) == T0, "values carry the simulated origin"
                parts = client.get_node(f"ns={idx};s=PartCounter")
                assert await parts.read_value() == 0
                now = client.get_node(CURRENT_TIME)
                assert to_ns(await now.read_value()) == T0, "paused: CurrentTime stands at origin"
                await asyncio.sleep(0.2)
                assert to_ns(await now.read_value()) == T0, "no time may pass while paused"
    finally:
        await ws.stop()


async def test_a_client_connected_before_the_clock_sees_every_part(tmp_path: Path) -> None:
    """The lead's end-to-end set-up: subscribe first, then let the workshop produce."""
    ws = Workshop(settings(tmp_path / "truth", speed=3600.0), specs=(LASER,))
    await ws.start(paused=True)
    handler = Changes()
    try:
        server = ws.opcua_server("laser-1")
        async with Client(ws.opcua_endpoints["laser-1"], timeout=5) as client:
            idx, _ = await machine_node(client, server.namespace_uri)
            sub = await client.create_subscription(50, handler)
            nodes = [client.get_node(f"ns={idx};s={n}") for n in ("PartCounter", "EnergyCounter")]
            await sub.subscribe_data_change(nodes, queuesize=1000)
            await asyncio.sleep(0.2)
            await ws.resume()
            await asyncio.sleep(1.5)
            current = client.get_node(CURRENT_TIME)
            server_now = to_ns(await current.read_value())
            assert ws.clock is not None
            assert abs(server_now - ws.clock.now_ns()) < 3600 * 10**9, (
                "CurrentTime must follow simulated time (within a second of wall time at x3600)"
            )
            assert server_now > T0 + 3600 * 10**9
            await sub.delete()
    finally:
        await ws.stop()
    seen = handler.values["PartCounter"]
    assert len(seen) > 20
    # the truth file holds every part; the subscription ended a moment before the workshop
    parts = load_truth(tmp_path / "truth").parts_of("laser-1")[: len(seen) - 1]
    assert [v for v, _ in seen] == list(range(len(parts) + 1)), (
        "the subscriber must receive every part counter value, 0 then one by one"
    )
    assert [ts for _, ts in seen[1:]] == [p.end_ns for p in parts], (
        "source timestamps are the simulated instants the parts ended"
    )
    energy = dict((ts, v) for v, ts in handler.values["EnergyCounter"])
    for p in parts:
        assert energy.get(p.end_ns) == p.energy_counter_wh


async def test_server_restart_keeps_the_address_space(tmp_path: Path) -> None:
    ws = Workshop(settings(None, speed=600.0), specs=(MILL,))
    await ws.start()
    try:
        server = ws.opcua_server("mill-1")
        await server.stop()
        assert not server.running
        await asyncio.sleep(0.2)  # the machine keeps producing while its server is down
        await server.start()
        await asyncio.sleep(0.2)
        async with Client(ws.opcua_endpoints["mill-1"], timeout=5) as client:
            idx, _ = await machine_node(client, server.namespace_uri)
            dv = await client.get_node(f"ns={idx};s=PartCounter").read_data_value()
            snap = ws.snapshots()["mill-1"]
            assert dv.Value is not None and dv.Value.Value == snap.part_count
            assert to_ns(dv.SourceTimestamp) > T0
    finally:
        await ws.stop()
