"""The simulated mill's companion objects (OPC 40001-1, 40501-1) and the servers' security."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from microfactory.gateway.adapters.opcua.certificates import create_certificate
from microfactory.sim.machines import MILL
from microfactory.sim.model import MachineModel, MachineSnapshot
from microfactory.sim.opcua_companion import (
    DI_URI,
    ITEM_STATE_OF,
    MACHINE_TOOL_URI,
    MACHINERY_URI,
    JobTracker,
    node_id,
)
from microfactory.sim.opcua_machine import OpcUaMachineServer
from microfactory.sim.workshop import Workshop

from .test_opcua_server import Changes, to_ns
from .util import T0, settings

pytestmark = pytest.mark.integration  # each test starts OPC UA servers

S = 1_000_000_000
BB = "MachineryBuildingBlocks"


async def child(node: Node, *path: tuple[str, str], client: Client) -> Node:
    """Follow browse names given as (namespace URI, name): the way a client must."""
    names = [f"{await client.get_namespace_index(uri) if uri else 0}:{n}" for uri, n in path]
    return await node.get_child(names)


async def mill_root(client: Client, machine_id: str = "mill-1") -> Node:
    own = f"urn:microfactory:sim:{machine_id}"
    return await child(
        client.nodes.objects, (MACHINERY_URI, "Machines"), (own, machine_id), client=client
    )


def std(idx: int, identifier: int) -> ua.NodeId:
    return node_id(identifier, idx)


async def supertypes(client: Client, type_id: ua.NodeId) -> list[ua.NodeId]:
    chain: list[ua.NodeId] = []
    node = client.get_node(type_id)
    while True:
        parents = await node.get_referenced_nodes(
            ObjectIds.HasSubtype, direction=ua.BrowseDirection.Inverse
        )
        if not parents:
            return chain
        node = parents[0]
        chain.append(node.nodeid)


async def test_the_mill_shows_machinery_and_machine_tool_objects_with_standard_types(
    tmp_path: Path,
) -> None:
    ws = Workshop(settings(None), specs=(MILL,))
    await ws.start(paused=True)
    try:
        async with Client(ws.opcua_endpoints["mill-1"], timeout=5) as client:
            namespaces = await client.get_namespace_array()
            for uri in (DI_URI, MACHINERY_URI, MACHINE_TOOL_URI):
                assert uri in namespaces, f"standard namespace {uri} missing"
            machinery = namespaces.index(MACHINERY_URI)
            mt = namespaces.index(MACHINE_TOOL_URI)
            machines = await child(client.nodes.objects, (MACHINERY_URI, "Machines"), client=client)
            assert machines.nodeid == std(machinery, 1001), "Machinery's Machines folder id"
            mill = await mill_root(client)
            assert await mill.read_type_definition() == std(mt, 13), "MachineToolType"
            ident = await child(mill, (DI_URI, "Identification"), client=client)
            assert await ident.read_type_definition() == std(mt, 11)
            plate = {
                name: await (await child(ident, (DI_URI, name), client=client)).read_value()
                for name in ("Manufacturer", "Model", "SerialNumber")
            }
            assert plate["Manufacturer"].Text and plate["Model"].Text, plate
            assert plate["SerialNumber"] == "SIM-mill-1"

            state = await child(
                mill, (MACHINERY_URI, BB), (MACHINERY_URI, "MachineryItemState"), client=client
            )
            state_type = await state.read_type_definition()
            assert state_type == std(machinery, 1002), "MachineryItemState_StateMachineType"
            assert node_id(ObjectIds.FiniteStateMachineType) in await supertypes(client, state_type)
            current = await child(state, ("", "CurrentState"), client=client)
            dv = await current.read_data_value()
            assert dv.Value is not None and dv.Value.Value.Text == "NotExecuting", "setup"
            assert to_ns(dv.SourceTimestamp) == T0, "simulated origin, like the own nodes"
            state_id = await (await child(current, ("", "Id"), client=client)).read_value()
            assert state_id == std(machinery, 5007), "Id names the NotExecuting state object"
            number = await child(client.get_node(state_id), ("", "StateNumber"), client=client)
            assert await number.read_value() == 2

            mode = await child(
                mill, (MACHINERY_URI, BB), (MACHINERY_URI, "MachineryOperationMode"), client=client
            )
            assert await mode.read_type_definition() == std(mt, 1003)
            assert std(machinery, 1008) in await supertypes(client, std(mt, 1003))
            mode_now = await (await child(mode, ("", "CurrentState"), client=client)).read_value()
            assert mode_now.Text == "Setup"

            job = await child(
                mill,
                (MACHINE_TOOL_URI, "Production"),
                (MACHINE_TOOL_URI, "ProductionPlan"),
                ("urn:microfactory:sim:mill-1", "Job"),
                client=client,
            )
            assert await job.read_type_definition() == std(mt, 29), "ProductionJobType"
            plan = await job.get_parent()
            assert plan is not None and await plan.read_type_definition() == std(mt, 30)
            for name, expected in (("RunsCompleted", 0), ("PartsCompleted", 0), ("PartsGood", 0)):
                var = await child(job, (MACHINE_TOOL_URI, name), client=client)
                assert await var.read_value() == expected, name
                assert await var.read_data_type_as_variant_type() == ua.VariantType.UInt32
            planned = await child(job, (MACHINE_TOOL_URI, "RunsPlanned"), client=client)
            assert await planned.read_value() == 20
            job_state = await child(job, (MACHINE_TOOL_URI, "State"), client=client)
            assert await job_state.read_type_definition() == std(mt, 28)
    finally:
        await ws.stop()


def value_at(series: dict[int, int], ts: int) -> int:
    """The counter as it stood at ``ts``: its last change at or before it."""
    return series[max(t for t in series if t <= ts)]


def _runs(values: list[tuple[Any, int]]) -> list[tuple[Any, int]]:
    """Collapse repeats: each value with the timestamp it first took."""
    out: list[tuple[Any, int]] = []
    for v, ts in values:
        if not out or out[-1][0] != v:
            out.append((v, ts))
    return out


async def test_companion_values_follow_the_model(tmp_path: Path) -> None:
    ws = Workshop(settings(None, speed=3600.0), specs=(MILL,))
    await ws.start(paused=True)
    handler = Changes()
    try:
        async with Client(ws.opcua_endpoints["mill-1"], timeout=5) as client:
            own = await client.get_namespace_index("urn:microfactory:sim:mill-1")
            mill = await mill_root(client)
            current = await child(
                mill,
                (MACHINERY_URI, BB),
                (MACHINERY_URI, "MachineryItemState"),
                ("", "CurrentState"),
                client=client,
            )
            prod = (MACHINE_TOOL_URI, "Production")
            job_path = (
                prod,
                (MACHINE_TOOL_URI, "ProductionPlan"),
                ("urn:microfactory:sim:mill-1", "Job"),
            )
            parts = await child(
                mill, *job_path, (MACHINE_TOOL_URI, "PartsCompleted"), client=client
            )
            good = await child(mill, *job_path, (MACHINE_TOOL_URI, "PartsGood"), client=client)
            lifetime = await child(
                mill,
                prod,
                (MACHINE_TOOL_URI, "Statistics"),
                (MACHINE_TOOL_URI, "PartsProducedInLifetime"),
                client=client,
            )
            nodes = [
                client.get_node(f"ns={own};s={n}") for n in ("State", "PartCounter", "GoodCounter")
            ] + [current, parts, good, lifetime]
            sub = await client.create_subscription(50, handler)
            await sub.subscribe_data_change(nodes, queuesize=5000)
            await asyncio.sleep(0.2)
            await ws.resume()
            await asyncio.sleep(2.5)  # about 2.5 simulated hours: faults, batches, set-ups
            await sub.delete()
    finally:
        await ws.stop()
    v = handler.values
    item_state = v["Machines/mill-1/MachineryBuildingBlocks/MachineryItemState.CurrentState"]
    companion_state = _runs([(x.Text, ts) for x, ts in item_state])
    own_state = _runs([(ITEM_STATE_OF[x], ts) for x, ts in v["State"]])
    assert len(own_state) > 4, f"too few state changes to compare: {own_state}"
    assert companion_state == own_state, "CurrentState follows State, at the same instants"

    job_prefix = "Machines/mill-1/Production/ProductionPlan/Job/"
    life = v["Machines/mill-1/Production/Statistics/PartsProducedInLifetime"]
    assert life == v["PartCounter"], "the lifetime counter is the part counter, same instants"
    assert life[-1][0] > 40
    job_parts = dict((ts, x) for x, ts in v[job_prefix + "PartsCompleted"])
    job_good = dict((ts, x) for x, ts in v[job_prefix + "PartsGood"])
    own_good = dict((ts, x) for x, ts in v["GoodCounter"])
    resets = 0
    previous: tuple[int, int, int] | None = None  # job parts, job good, machine good
    for count, ts in v["PartCounter"][1:]:
        assert ts in job_parts, f"part {count} at {ts} did not move the job's PartsCompleted"
        # an unchanged counter sends no notification (the filter triggers on value changes)
        now = (job_parts[ts], value_at(job_good, ts), value_at(own_good, ts))
        assert 1 <= now[0] <= 20, "a job holds one batch of 20 runs"
        if now[0] == 1:
            resets += 1
            assert now[1] == now[2] - (previous[2] if previous else 0), "first part's verdict"
        else:
            assert previous is not None and now[0] - previous[0] == 1, "one part, one count"
            assert now[1] - previous[1] == now[2] - previous[2], "PartsGood moves with Good"
        previous = now
    assert resets >= 2, "jobs restart their counters with each batch"


def test_jobs_are_cut_at_batch_ends_and_restart_with_the_next_cycle() -> None:
    """Pure: the JobTracker over a model run, without a server."""
    spec = replace(MILL, mtbf_s=None)
    model = MachineModel(spec, seed=3, start_ns=T0, power_loss_probability=0.0)
    jobs = JobTracker("mill-1")
    seen: list[tuple[MachineSnapshot, Any]] = []
    for step in range(1, 4 * 3600):
        for event in model.advance(T0 + step * S):
            seen.append((event.snapshot, jobs.update(event.snapshot)))
    ended = [(s, j) for s, j in seen if j.state == "Ended"]
    assert ended, "no batch ended in four hours"
    for snap, job in ended:
        assert job.parts_completed == spec.batch_size, "a job ends after a full batch"
        assert snap.state == "setup"
    numbers = sorted({j.number for _, j in seen})
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 3
    for _snap, job in seen:
        assert 0 <= job.parts_good <= job.parts_completed <= spec.batch_size
        assert job.runs_completed == job.parts_completed


async def test_servers_offer_basic256sha256_and_accept_any_client_certificate(
    tmp_path: Path,
) -> None:
    server = OpcUaMachineServer(
        machine_id="laser-9",
        kind="laser_cutter",
        port=0,
        pki_dir=tmp_path / "pki",
        users={"operator": "s3cret"},
    )
    await server.start()
    try:
        assert server.certificate_path == tmp_path / "pki" / "laser-9-server-cert.der"
        assert server.certificate_path.exists()
        async with Client(server.endpoint, timeout=5) as plain:
            endpoints = await plain.get_endpoints()
        modes = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode) for e in endpoints}
        assert modes == {
            ("None", ua.MessageSecurityMode.None_),
            ("Basic256Sha256", ua.MessageSecurityMode.Sign),
            ("Basic256Sha256", ua.MessageSecurityMode.SignAndEncrypt),
        }, modes
        app_uri = "urn:microfactory:test:client"
        cert, key = create_certificate(tmp_path / "client", application_uri=app_uri)
        for user, password in ((None, None), ("operator", "s3cret")):
            client = Client(server.endpoint, timeout=5)
            client.application_uri = app_uri
            if user is not None:
                client.set_user(user)
                client.set_password(password or "")
            await client.set_security(
                SecurityPolicyBasic256Sha256,
                str(cert),
                str(key),
                server_certificate=str(server.certificate_path),
                mode=ua.MessageSecurityMode.SignAndEncrypt,
            )
            async with client:
                idx = await client.get_namespace_index(server.namespace_uri)
                assert await client.get_node(f"ns={idx};s=PartCounter").read_value() == 0
        wrong = Client(server.endpoint, timeout=5)
        wrong.set_user("operator")
        wrong.set_password("guess")
        with pytest.raises(UaStatusCodeError) as refused:
            async with wrong:
                pass
        assert refused.value.code == StatusCodes.BadUserAccessDenied
    finally:
        await server.stop()
    assert server.certificate_path.exists(), "a given pki_dir is kept"
    kept = server.certificate_path.read_bytes()
    again = OpcUaMachineServer(
        machine_id="laser-9", kind="laser_cutter", port=0, pki_dir=tmp_path / "pki"
    )
    await again.start()
    try:
        async with Client(again.endpoint, timeout=5) as plain:
            offered = {
                e.ServerCertificate for e in await plain.get_endpoints() if e.ServerCertificate
            }
    finally:
        await again.stop()
    assert offered == {kept}, "a new instance on the same pki_dir serves the same certificate"


async def test_a_temporary_pki_dir_goes_with_the_server_and_the_certificate_stays() -> None:
    server = OpcUaMachineServer(machine_id="mill-9", kind="cnc_mill", port=0)
    await server.start()
    first = server.certificate_path.read_bytes()
    directory = server.certificate_path.parent
    await server.stop()
    assert not directory.exists(), "the default temporary directory is removed on stop"
    await server.start()
    try:
        assert server.certificate_path.read_bytes() == first, "one certificate per instance"
    finally:
        await server.stop()
