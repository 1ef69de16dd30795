"""The node-opcua test server behaves as its fixture says, seen by a plain asyncua client.

Other tests use this server to test our adapter; if a test there fails, this module tells
whether the server or the adapter is at fault. It uses asyncua directly, not the adapter.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from tests.helpers.markers import starts_server
from tests.helpers.node_opcua import (
    COMPANION_NODES,
    MACHINERY_URI,
    NAMESPACE_URI,
    ClientCertificate,
    NodeOpcuaError,
    NodeOpcuaServer,
    make_client_certificate,
)

pytestmark = pytest.mark.integration

USER, PASSWORD = "operator", "s3cret-for-tests"


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClientCertificate]:
    base = tmp_path_factory.mktemp("client-certs")
    return {
        name: make_client_certificate(base, f"urn:microfactory:test:{name}", name)
        for name in ("trusted", "stranger")
    }


@pytest.fixture(scope="module")
@starts_server("node-opcua OPC UA server")
def server(
    tmp_path_factory: pytest.TempPathFactory, certificates: dict[str, ClientCertificate]
) -> Iterator[NodeOpcuaServer]:
    with NodeOpcuaServer(
        tmp_path_factory.mktemp("node-opcua"),
        security=[("None", "None"), ("Basic256Sha256", "SignAndEncrypt")],
        users={USER: PASSWORD},
        trusted_client_certificates=[certificates["trusted"].certificate],
    ) as started:
        yield started


async def machine_node(client: Client, string_id: str) -> Node:
    """The node ``s=string_id`` of the test namespace.

    asyncua sends an ``nsu=`` node id as is, which node-opcua cannot decode in a Read (the
    request times out): resolve the namespace index first.
    """
    index = await client.get_namespace_index(NAMESPACE_URI)
    return client.get_node(ua.NodeId(ua.String(string_id), ua.Int16(index)))


async def secure_client(
    server: NodeOpcuaServer,
    cert: ClientCertificate,
    mode: ua.MessageSecurityMode = ua.MessageSecurityMode.SignAndEncrypt,
) -> Client:
    client = Client(server.endpoint, timeout=5)
    client.application_uri = cert.application_uri  # node-opcua checks it against the cert
    client.set_user(USER)
    client.set_password(PASSWORD)
    await client.set_security(
        SecurityPolicyBasic256Sha256,
        str(cert.certificate),
        str(cert.private_key),
        server_certificate=str(server.certificate_path),
        mode=mode,
    )
    return client


async def test_anonymous_client_reads_over_policy_none(server: NodeOpcuaServer) -> None:
    async with Client(server.endpoint, timeout=5) as client:
        power = await (await machine_node(client, "Machine.Power")).read_value()
        units = await (await machine_node(client, "Machine.Power-EngineeringUnits")).read_value()
    assert isinstance(power, float), f"Power should be a Double, got {power!r}"
    assert units.DisplayName.Text == "kW", f"Power's EngineeringUnits: {units!r}"
    assert units.UnitId == 4937556, f"kW's UNECE code KWT is 4937556, got {units.UnitId}"


async def test_trusted_certificate_with_password_reads_over_signandencrypt(
    server: NodeOpcuaServer, certificates: dict[str, ClientCertificate]
) -> None:
    client = await secure_client(server, certificates["trusted"])
    async with client:
        count = await (await machine_node(client, "Machine.PartCount")).read_value()
    assert isinstance(count, int), f"PartCount should be a UInt32, got {count!r}"
    assert count >= 1


async def test_untrusted_certificate_is_refused(
    server: NodeOpcuaServer, certificates: dict[str, ClientCertificate]
) -> None:
    client = await secure_client(server, certificates["stranger"])
    # node-opcua answers OpenSecureChannel with an ERR message (BadSecurityChecksFailed);
    # asyncua 2.1 fails to parse it and raises AssertionError, hence the broad catch.
    with pytest.raises((UaError, AssertionError, OSError, TimeoutError)):
        async with client:
            pass
    rejected = list(server.rejected_dir.glob("*"))
    assert rejected, "node-opcua should keep the refused certificate in pki/server/rejected"


async def test_unlisted_security_pair_is_refused(
    server: NodeOpcuaServer, certificates: dict[str, ClientCertificate]
) -> None:
    client = await secure_client(server, certificates["trusted"], ua.MessageSecurityMode.Sign)
    with pytest.raises((UaError, AssertionError, OSError, TimeoutError)):
        async with client:
            pass


async def test_bad_uncertain_and_frozen_nodes(server: NodeOpcuaServer) -> None:
    async with Client(server.endpoint, timeout=5) as client:
        bad = await (await machine_node(client, "Machine.BadNode")).read_data_value(
            raise_on_bad_status=False
        )
        uncertain = await (await machine_node(client, "Machine.UncertainNode")).read_data_value(
            raise_on_bad_status=False
        )
        frozen = await (await machine_node(client, "Machine.FrozenTs")).read_data_value()
    assert bad.StatusCode is not None
    assert bad.StatusCode.value == StatusCodes.BadSensorFailure, bad.StatusCode
    assert bad.Value is not None and bad.Value.Value is None, f"BadNode carries {bad.Value!r}"
    assert uncertain.StatusCode is not None
    assert uncertain.StatusCode.value == StatusCodes.UncertainLastUsableValue
    assert uncertain.Value is not None and isinstance(uncertain.Value.Value, float)
    assert frozen.SourceTimestamp is not None
    assert frozen.SourceTimestamp.isoformat() == "2026-01-01T00:00:00+00:00"


async def test_phases_is_an_array_of_three_doubles(server: NodeOpcuaServer) -> None:
    async with Client(server.endpoint, timeout=5) as client:
        phases = await (await machine_node(client, "Machine.Phases")).read_data_value()
    assert phases.Value is not None
    assert phases.Value.VariantType == ua.VariantType.Double
    values = phases.Value.Value
    assert isinstance(values, list) and len(values) == 3, f"Phases = {values!r}"


async def test_enumerations_expose_enum_strings_and_enum_values(
    server: NodeOpcuaServer,
) -> None:
    async with Client(server.endpoint, timeout=5) as client:
        strings = await _enum_property(client, "Machine.StateEnum", "EnumStrings")
        values = await _enum_property(client, "Machine.StateEnumValues", "EnumValues")
    assert [t.Text for t in strings] == ["Off", "Idle", "Running", "Fault"]
    assert {v.Value: v.DisplayName.Text for v in values} == {
        0: "Off",
        10: "Idle",
        20: "Running",
        30: "Fault",
    }


async def _enum_property(client: Client, node: str, name: str) -> list[Any]:
    data_type = await (await machine_node(client, node)).read_data_type()
    prop = await client.get_node(data_type).get_child(f"0:{name}")
    value = await prop.read_value()
    assert isinstance(value, list), f"{node}'s data type {name} = {value!r}"
    return value


async def test_secure_only_server_refuses_policy_none(
    node_opcua: Callable[..., NodeOpcuaServer],
) -> None:
    server = node_opcua(security=[("Aes256_Sha256_RsaPss", "Sign")], allow_anonymous=False)
    # discovery still works on node-opcua's restricted None endpoint ...
    endpoints = await Client(server.endpoint, timeout=5).connect_and_get_server_endpoints()
    offered = {(e.SecurityPolicyUri.rsplit("#", 1)[-1], e.SecurityMode.name) for e in endpoints}
    assert offered == {("Aes256_Sha256_RsaPss", "Sign")}, offered
    # ... but a session over it is refused
    with pytest.raises(UaStatusCodeError):
        async with Client(server.endpoint, timeout=5):
            pass


async def test_companion_machine_tool_under_machines(
    node_opcua: Callable[..., NodeOpcuaServer],
) -> None:
    server = node_opcua(companion=True, update_ms=100)
    async with Client(server.endpoint, timeout=5) as client:
        machinery = await client.get_namespace_index(MACHINERY_URI)
        own = await client.get_namespace_index(NAMESPACE_URI)
        mill = await client.nodes.objects.get_child([f"{machinery}:Machines", f"{own}:Mill"])
        assert mill.nodeid == ua.NodeId(ua.String("Mill"), ua.Int16(own))
        nodes = {path: await machine_node(client, sid) for path, sid in COMPANION_NODES.items()}
        first = {path: await node.read_value() for path, node in nodes.items()}
        await asyncio.sleep(0.5)
        later = {path: await node.read_value() for path, node in nodes.items()}
    state = "MachineryBuildingBlocks/MachineryItemState/CurrentState"
    assert {first[state].Text, later[state].Text} <= {"Executing", "NotExecuting"}
    job = "Production/ProductionPlan/Job1/"
    for counter in ("RunsCompleted", "PartsCompleted", "PartsGood"):
        assert later[job + counter] > first[job + counter], f"{counter} does not count"
    assert later[job + "State/CurrentState"].Text == "Running"


def test_a_server_that_cannot_start_says_why(tmp_path: Path) -> None:
    server = NodeOpcuaServer(tmp_path, security=[("None", "Sign")])
    with pytest.raises(NodeOpcuaError, match="None goes only with None"):
        server.start(timeout_s=20)
