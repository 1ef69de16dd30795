"""Companion discovery against real servers: the simulated mill, the laser, a two-machine cell."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.server.server import Server

from microfactory.gateway.adapters.opcua.companion import (
    ITEM_STATE_MAP,
    CompanionNode,
    discover,
)
from microfactory.sim.machines import MILL
from microfactory.sim.model import MachineModel
from microfactory.sim.opcua_companion import CompanionFace, node_id
from microfactory.sim.opcua_machine import OpcUaMachineServer, free_port
from tests.helpers.markers import starts_server

pytestmark = pytest.mark.integration  # real OPC UA servers

T0 = 1_780_000_000_000_000_000
NSU = re.compile(r"^nsu=(?P<uri>[^;]+);(?P<kind>[is])=(?P<ident>.+)$")


@pytest.fixture
@starts_server("the simulated mill's OPC UA server")
async def mill() -> AsyncIterator[OpcUaMachineServer]:
    server = OpcUaMachineServer(machine_id="mill-1", kind="cnc_mill", port=0)
    await server.start()
    await server.publish(MachineModel(MILL, seed=1, start_ns=T0).snapshot(), tick=True)
    try:
        yield server
    finally:
        await server.stop()


async def resolve(client: Client, proposal: CompanionNode) -> ua.NodeId:
    match = NSU.match(proposal.node)
    assert match, f"{proposal.node!r} is not in the nsu= form"
    idx = await client.get_namespace_index(match["uri"])
    ident = match["ident"]
    return node_id(int(ident) if match["kind"] == "i" else ident, idx)


async def test_the_mill_yields_state_program_and_counters(mill: OpcUaMachineServer) -> None:
    async with Client(mill.endpoint, timeout=5) as client:
        found = await discover(client)
        by_signal = {p.signal: p for p in found}
        assert len(by_signal) == len(found), f"one proposal per signal: {found}"
        assert set(by_signal) == {"state", "program", "part_count", "good_count"}, by_signal
        # OPC 40501-1 has PartsCompleted and PartsGood, no bad-part counter: nothing to map
        assert "scrap_count" not in by_signal
        for p in found:
            assert "ns=" not in p.node.replace("nsu=", ""), p.node
            assert p.browse_path.startswith("Objects/Machines/mill-1/"), p.browse_path
            dv = await client.get_node(await resolve(client, p)).read_data_value()
            assert dv.StatusCode is not None and dv.StatusCode.is_good(), p
        state = by_signal["state"]
        assert state.value_map == ITEM_STATE_MAP
        assert state.spec == "OPC 40001-1 MachineryItemState"
        assert state.browse_path.endswith("/MachineryItemState/CurrentState")
        text = (await client.get_node(await resolve(client, state)).read_value()).Text
        assert state.value_map[text] == "idle", "a mill in set-up is NotExecuting: idle"
        part = by_signal["part_count"]
        assert part.browse_path.endswith("/Statistics/PartsProducedInLifetime"), (
            "the never-reset lifetime counter is preferred to the job's"
        )
        assert by_signal["good_count"].browse_path.endswith("/ProductionPlan/Job/PartsGood")
        program = await client.get_node(await resolve(client, by_signal["program"])).read_value()
        assert program in MILL.programs


async def test_a_server_without_companion_objects_yields_nothing() -> None:
    server = OpcUaMachineServer(machine_id="laser-1", kind="laser_cutter", port=0)
    await server.start()
    try:
        async with Client(server.endpoint, timeout=5) as client:
            assert await discover(client) == []
    finally:
        await server.stop()


async def test_the_walk_is_bounded(mill: OpcUaMachineServer) -> None:
    async with Client(mill.endpoint, timeout=5) as client:
        assert await discover(client, max_nodes=4) == [], (
            "four nodes do not reach the state machine: the walk must stop there"
        )


async def test_two_machines_on_one_server_are_told_apart() -> None:
    port = free_port()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/cell")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    server.disable_clock(True)
    idx = await server.register_namespace("urn:microfactory:test:cell")
    model = MachineModel(MILL, seed=2, start_ns=T0)
    for machine in ("mill-a", "mill-b"):
        face = CompanionFace(machine_id=machine, runs_planned=20)
        await face.build(server, idx)
        for key, value in face.values(model.snapshot()).items():
            nodeid, vtype = face.node(key)
            await server.write_attribute_value(nodeid, ua.DataValue(ua.Variant(value, vtype)))
    await server.start()
    try:
        async with Client(f"opc.tcp://127.0.0.1:{port}/cell", timeout=5) as client:
            found = await discover(client)
    finally:
        await server.stop()
    machines = {p.browse_path.split("/")[2] for p in found}
    assert machines == {"mill-a", "mill-b"}, found
    for signal in ("state", "program", "part_count", "good_count"):
        paths = [p.browse_path for p in found if p.signal == signal]
        assert len(paths) == 2 and len(set(paths)) == 2, f"{signal}: {paths}"
