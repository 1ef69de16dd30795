"""``opcua browse``'s walk and config writer, against the simulated CNC mill (asyncua server).

The pure half checks the proposals (signal names, units, arrays, enumerations, duplicates)
on hand-made nodes and parses the written YAML back through the site-config model; the
integration half walks a real server and checks that every node id written resolves there.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua
from asyncua.client.client import Client

from microfactory.gateway.adapters.opcua.batched import nsu_node_id
from microfactory.gateway.adapters.opcua.browse import (
    BrowsedNode,
    BrowseResult,
    browse_server,
    identity_paths,
    walk,
)
from microfactory.gateway.adapters.opcua.companion import CompanionNode
from microfactory.gateway.adapters.opcua.config import OpcUaAdapterConfig, node_id_parts
from microfactory.gateway.adapters.opcua.connect import disconnect, open_client
from microfactory.gateway.adapters.opcua.proposals import (
    config_unit,
    propose_signal,
    slug,
    unit_id_code,
)
from microfactory.gateway.adapters.opcua.snippet import build_site_config, render_tree
from microfactory.gateway.config import load_site_config, parse_site_config
from microfactory.sim.opcua_machine import OpcUaMachineServer
from tests.helpers.markers import starts_server

NS = "urn:microfactory:sim:mill-1"
LOG = logging.getLogger("test.browse")


def unit_id(code: str) -> int:
    """EUInformation.UnitId of a UNECE common code (OPC 10000-8 § 5.6.3)."""
    value = 0
    for c in code:
        value = value << 8 | ord(c)
    return value


def eu(code: str | None, display: str) -> ua.EUInformation:
    info = ua.EUInformation()
    info.UnitId = unit_id(code) if code else -1
    info.DisplayName = ua.LocalizedText(display)
    return info


def variable(name: str, base: str = "Double", **kw: Any) -> BrowsedNode:
    fields: dict[str, Any] = {
        "depth": 2,
        "browse_name": name,
        "node": f"nsu=urn:x;s={name}",
        "node_class": "Variable",
        "browse_path": f"Machine/{name}",
        "data_type": base,
        "base_type": base,
        "value": 1.0,
    }
    fields.update(kw)
    return BrowsedNode(**fields)


def adapter_cfg(**kw: Any) -> OpcUaAdapterConfig:
    base: dict[str, Any] = {
        "name": "press-1-opcua",
        "machine": "press-1",
        "endpoint": "opc.tcp://127.0.0.1:4840",
        "security_policy": "None",
        "security_mode": "None",
        "allow_insecure": True,
        "companion": "auto",
    }
    base.update(kw)
    return OpcUaAdapterConfig.model_validate(base)


# --------------------------------------------------------------------------- pure
@pytest.mark.parametrize(
    ("name", "unit", "base", "expected"),
    [
        ("ActivePower", None, "Double", "power_active"),
        ("Power", "kW", "Double", "power_active"),
        ("Power", "A", "Double", "power"),  # the unit says it is not a power
        ("PowerL2", "W", "Double", "power_l2"),
        ("ReactivePower", None, "Double", "reactive_power"),
        ("LaserPower", "W", "Double", "laser_power"),
        ("Temperature", "degC", "Double", "temperature"),
        ("SpindleTemperature", None, "Double", "temperature_spindle"),
        ("Temperature", "bar", "Double", "temperature"),  # slug == vocabulary word, no unit
        ("EnergyTotal", "kWh", "Double", "energy_active"),
        ("PartCount", None, "UInt32", "part_count"),
        ("PartsCompleted", None, "UInt32", "part_count"),
        ("PartsGood", None, "UInt32", "good_count"),
        ("PartsBad", None, "UInt32", "scrap_count"),
        ("StateCode", None, "Int16", "state_code"),  # codes without a map: not words
        ("State", None, "Enumeration", "state"),
        ("Status", None, "String", "state"),
        ("Program", None, "String", "program"),
        ("SpindleSpeed", "rpm", "Double", "spindle_speed"),
        ("FeedOverride", "%", "Double", "feed_override"),
        ("VoltageL1", "V", "Double", "voltage_l1"),
    ],
)
def test_signal_proposals_use_the_vocabulary_when_name_or_unit_make_it_plain(
    name: str, unit: str | None, base: str, expected: str
) -> None:
    assert propose_signal(name, unit, base) == expected


def test_integer_codes_with_enum_strings_are_proposed_as_state() -> None:
    assert propose_signal("MachineState", None, "Int32", enum=True) == "state"


def test_slug_makes_signal_names_of_browse_names() -> None:
    assert slug("SpindleSpeed") == "spindle_speed"
    assert slug("HTTPServerLoad") == "http_server_load"
    assert slug("Axis X.Position") == "axis_x_position"
    assert slug("3DTemp") == "v_3d_temp"
    assert slug("Axis1Position") == "axis1_position"
    assert slug("---") == "value"


def test_engineering_units_map_unece_codes_and_display_names() -> None:
    assert unit_id_code(unit_id("KWT")) == "KWT"
    assert unit_id_code(unit_id("P1")) == "P1"
    assert config_unit(eu("KWT", "kW")) == ("kW", None)
    assert config_unit(eu("WHR", "Wh")) == ("Wh", None)
    assert config_unit(eu("CEL", "°C")) == ("degC", None)
    assert config_unit(eu("RPM", "r/min")) == ("rpm", None)
    assert config_unit(eu("HTZ", "Hz")) == ("Hz", None)
    assert config_unit(eu(None, "°C")) == ("degC", None), "display name alone is enough"
    assert config_unit(eu(None, "kWh")) == ("kWh", None)
    unit, unknown = config_unit(eu("XZZ", "furlong/fortnight"))
    assert unit is None and unknown is not None and "furlong" in unknown and "XZZ" in unknown
    assert config_unit(None) == (None, None)


def test_node_ids_are_written_with_namespace_uris_never_indexes() -> None:
    namespaces = ["http://opcfoundation.org/UA/", "urn:a", "urn:b"]

    def node_id(identifier: Any, ns: int) -> ua.NodeId:
        return ua.NodeId(identifier, ua.Int16(ns))

    assert nsu_node_id(node_id("Power", 2), namespaces) == "nsu=urn:b;s=Power"
    assert nsu_node_id(node_id(1001, 1), namespaces) == "nsu=urn:a;i=1001"
    assert nsu_node_id(node_id(b"\x01\x02", 1), namespaces) == "nsu=urn:a;b=AQI="


def test_written_config_parses_back_with_arrays_enums_duplicates_and_odd_units(
    tmp_path: Path,
) -> None:
    nodes = [
        BrowsedNode(1, "Press", "nsu=urn:x;s=Press", "Object", "Press"),
        variable("Power", unit="kW"),
        variable("Power", node="nsu=urn:x;s=Other.Power", unit="kW"),  # same name twice
        variable("Voltage", value=[230.0, 231.0, 229.5], array_length=3, unit="V"),
        variable("Positions", value=list(range(40)), array_length=40),
        variable("StateCode", base="Int16", data_type="Int16", value=2, enum=True),
        variable("StatusWord", base="UInt16", data_type="UInt16", value=3),
        variable("Speed", unit=None, unit_unknown="furlong/fortnight"),
        variable("Temperature", unit="kW"),  # vocabulary slug, impossible unit
        variable("Blob", base="ByteString", data_type="ByteString", value=b"x"),
        variable("Secret", readable=False),
        variable("Label", base="LocalizedText", data_type="LocalizedText", value=None),
        variable("yes", base="Boolean", data_type="Boolean", value=True),  # a YAML word
    ]
    result = BrowseResult("opc.tcp://127.0.0.1:4840", "Press 1", "urn:x:server", nodes, False)
    out = tmp_path / "site.yaml"
    text = build_site_config(result, adapter_cfg(), out=out, machine="press-1")
    out.write_text(text)
    data = yaml.safe_load(text)
    site = parse_site_config(data, str(out))
    (adapter,) = site.adapters
    assert isinstance(adapter, OpcUaAdapterConfig)
    by_node = {n.node: n for n in adapter.nodes}
    assert by_node["nsu=urn:x;s=Power"].signal == "power_active"
    assert by_node["nsu=urn:x;s=Power"].unit == "kW"
    assert by_node["nsu=urn:x;s=Other.Power"].signal == "power_active_2", "duplicates get _2"
    assert by_node["nsu=urn:x;s=Voltage"].elements == ["voltage_l1", "voltage_l2", "voltage_l3"]
    positions = by_node["nsu=urn:x;s=Positions"]
    assert positions.signal == "positions" and positions.index == 0, "long arrays: one index"
    state = by_node["nsu=urn:x;s=StateCode"]
    assert state.signal == "state" and state.value_map is None, "the adapter reads enums itself"
    assert "enumeration: the adapter reads" in text
    codes = by_node["nsu=urn:x;s=StatusWord"]
    assert codes.signal == "status_word" and "integer codes: to store them as `state`" in text
    assert by_node["nsu=urn:x;s=Speed"].unit is None
    assert "unit furlong/fortnight: not a unit the gateway knows" in text
    assert by_node["nsu=urn:x;s=Temperature"].unit is None, "a unit that cannot convert is dropped"
    assert "nsu=urn:x;s=Blob" not in by_node and "skipped Machine/Blob" in text
    assert "nsu=urn:x;s=Secret" not in by_node and "not readable" in text
    assert by_node["nsu=urn:x;s=yes"].signal == "yes", "YAML words are quoted"
    assert by_node["nsu=urn:x;s=Label"].signal == "label"
    assert "password" not in text


def test_companion_proposals_come_first_and_win_their_node() -> None:
    node = "nsu=urn:x;s=Machines/m/State.CurrentState"
    companion = [
        CompanionNode(
            node=node,
            signal="state",
            value_map={"Executing": "running", "Stopped": "idle"},
            spec="OPC 40001-1 Machinery",
            browse_path="Machines/m/MachineryBuildingBlocks/MachineryItemState/CurrentState",
        )
    ]
    nodes = [
        variable("CurrentState", node=node, base="LocalizedText"),
        variable("State", base="String", value="running"),
    ]
    result = BrowseResult("opc.tcp://h:4840", "M", "urn:x", nodes, False, companion)
    text = build_site_config(result, adapter_cfg(), out=Path("site.yaml"), machine="m")
    adapter = parse_site_config(yaml.safe_load(text)).adapters[0]
    assert isinstance(adapter, OpcUaAdapterConfig)
    assert adapter.nodes[0].node == node and adapter.nodes[0].signal == "state"
    assert adapter.nodes[0].value_map == {"Executing": "running", "Stopped": "idle"}
    assert [n.signal for n in adapter.nodes] == ["state"], "the companion gives `state` once"
    assert "# OPC 40001-1 Machinery: Machines/m/" in text
    assert (
        '# - {node: "nsu=urn:x;s=State", signal: state}'
        "  # also found; the companion mapping above is used"
    ) in text.splitlines()[-1]


def test_a_name_the_companion_does_not_give_is_still_numbered() -> None:
    companion = [
        CompanionNode("nsu=urn:x;s=Parts", "part_count", None, "OPC 40501-1", "Objects/Parts")
    ]
    nodes = [variable("ScrapCount", base="UInt32"), variable("RejectCount", base="UInt32")]
    result = BrowseResult("opc.tcp://h:4840", "M", "urn:x", nodes, False, companion)
    text = build_site_config(result, adapter_cfg(), out=Path("site.yaml"), machine="m")
    adapter = parse_site_config(yaml.safe_load(text)).adapters[0]
    assert isinstance(adapter, OpcUaAdapterConfig)
    assert [n.signal for n in adapter.nodes] == ["part_count", "scrap_count", "scrap_count_2"]
    assert "also found" not in text


def test_secure_config_names_password_env_trust_dir_and_certificate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = adapter_cfg(
        security_policy="Basic256Sha256",
        security_mode="Sign",
        allow_insecure=False,
        username="op",
        password="s3cret-word",
        trust_on_first_use=True,
    )
    out = tmp_path / "configs" / "site.yaml"
    result = BrowseResult("opc.tcp://h:4840", "M", "urn:x", [variable("Power")], False)
    text = build_site_config(
        result,
        cfg,
        out=out,
        machine="press-1",
        trust_dir=tmp_path / "state" / "opcua" / "trusted",
        certificate=(tmp_path / "state" / "c.der", tmp_path / "state" / "k.pem"),
        password_given=True,
    )
    assert "s3cret-word" not in text
    data = yaml.safe_load(text)
    entry = data["adapters"][0]
    assert entry["password_env"] == "MICROFACTORY_OPCUA_PASSWORD"
    assert entry["trust_dir"] == "../state/opcua/trusted", "relative to the config's folder"
    assert entry["certificate"] == "../state/c.der" and entry["private_key"] == "../state/k.pem"
    assert entry["security_mode"] == "Sign" and entry["trust_on_first_use"] is True
    monkeypatch.setenv("MICROFACTORY_OPCUA_PASSWORD", "from-env")
    adapter = parse_site_config(data).adapters[0]
    assert isinstance(adapter, OpcUaAdapterConfig)
    assert adapter.password is not None and adapter.password.get_secret_value() == "from-env"


def test_tree_lines_show_name_node_type_value_and_unit() -> None:
    lines = render_tree(
        [
            BrowsedNode(1, "Press", "nsu=urn:x;s=Press", "Object", "Press"),
            variable("Power", unit="kW", value=3.5),
            variable("Phases", value=[1.0, 2.0, 3.0], array_length=3),
            variable("Hidden", readable=False),
        ]
    )
    assert lines[0] == "Press  nsu=urn:x;s=Press  Object"
    assert lines[1] == "  Power  nsu=urn:x;s=Power  Double = 3.5 kW"
    assert lines[2] == "  Phases  nsu=urn:x;s=Phases  Double[3] = [1.0, 2.0, 3.0]"
    assert lines[3].endswith("(not readable)")


# --------------------------------------------------------------------------- real server
@pytest.fixture
@starts_server("simulated CNC mill (asyncua OPC UA server)")
async def mill(tmp_path: Path) -> AsyncIterator[OpcUaMachineServer]:
    server = OpcUaMachineServer(
        machine_id="mill-1", kind="cnc_mill", port=0, pki_dir=tmp_path / "mill-pki"
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def resolve_all(endpoint: str, nodes: list[str]) -> dict[str, str]:
    """node id -> status name of reading it on the server (by namespace URI)."""
    out: dict[str, str] = {}
    async with Client(endpoint, timeout=5) as client:
        for node in nodes:
            uri, kind, ident = node_id_parts(node)
            assert uri is not None, f"{node}: no namespace URI"
            idx = await client.get_namespace_index(uri)
            identifier: Any = int(ident) if kind == "i" else ident
            dv = await client.get_node(ua.NodeId(identifier, ua.Int16(idx))).read_data_value()
            out[node] = dv.StatusCode.name if dv.StatusCode else "Good"
    return out


@pytest.mark.integration
async def test_browse_of_the_mill_writes_a_config_whose_nodes_resolve(
    mill: OpcUaMachineServer, tmp_path: Path
) -> None:
    cfg = adapter_cfg(name="mill-1-opcua", machine="mill-1", endpoint=mill.endpoint)
    result = await browse_server(cfg, state_dir=tmp_path / "state", log=LOG)
    assert result.application_name == "microfactory simulator mill-1"
    assert not result.truncated
    names = {n.browse_name for n in result.nodes}
    assert {"Machine", "ActivePower", "SpindleSpeed", "PartCounter"} <= names
    assert all(n.node.startswith("nsu=") for n in result.nodes), "never ns=<index>"
    assert not any(n.node.startswith("nsu=http://opcfoundation.org/UA/;") for n in result.nodes)
    assert not any(n.browse_name in {"EngineeringUnits", "EURange"} for n in result.nodes)
    out = tmp_path / "site.yaml"
    out.write_text(build_site_config(result, cfg, out=out, machine="mill-1"))
    site = load_site_config(out)
    (adapter,) = site.adapters
    assert isinstance(adapter, OpcUaAdapterConfig)
    signals = {s for n in adapter.nodes for s in n.signals}
    expected = {
        "state",
        "program",
        "power_active",
        "energy_active",
        "part_count",
        "good_count",
        "scrap_count",
        "spindle_speed",
        "temperature_spindle",
        "temperature_coolant",
    }
    assert expected <= signals, f"missing proposals: {expected - signals}"
    machine_nodes = {n.signal: n.node for n in adapter.nodes}
    assert machine_nodes["power_active"] == f"nsu={NS};s=ActivePower"
    statuses = await resolve_all(mill.endpoint, [n.node for n in adapter.nodes])
    assert set(statuses.values()) == {"Good"}, f"nodes not Good on the server: {statuses}"


@pytest.mark.integration
async def test_signals_the_mills_companion_objects_give_are_mapped_once(
    mill: OpcUaMachineServer, tmp_path: Path
) -> None:
    cfg = adapter_cfg(name="mill-1-opcua", machine="mill-1", endpoint=mill.endpoint)
    result = await browse_server(cfg, state_dir=tmp_path / "state", log=LOG)
    given = {c.signal: c.node for c in result.companion}
    assert {"state", "program", "part_count", "good_count"} <= set(given), given
    out = tmp_path / "site.yaml"
    text = build_site_config(result, cfg, out=out, machine="mill-1")
    out.write_text(text)
    (adapter,) = load_site_config(out).adapters  # what `config check` runs
    assert isinstance(adapter, OpcUaAdapterConfig)
    signals = [s for n in adapter.nodes for s in n.signals]
    by_signal = {n.signal: n.node for n in adapter.nodes}
    for signal, node in given.items():
        assert signals.count(signal) == 1, f"{signal} mapped {signals.count(signal)} times"
        assert by_signal[signal] == node, f"{signal}: the companion node is not the one used"
        again = [s for s in signals if re.fullmatch(rf"{signal}_\d+", s)]
        assert not again, f"{signal} mapped again as {again}"
    note = "  # also found; the companion mapping above is used"
    shadowed = [line.strip() for line in text.splitlines() if line.endswith(note)]
    for own, signal in [
        ("PartCounter", "part_count"),
        ("GoodCounter", "good_count"),
        ("State", "state"),
        ("Program", "program"),
    ]:
        entry = f'# - {{node: "nsu={NS};s={own}", signal: {signal}}}{note}'
        assert entry in shadowed, f"{own} not written commented out as {signal}: {shadowed}"
    assert by_signal["scrap_count"] == f"nsu={NS};s=ScrapCounter", "no companion scrap counter"
    statuses = await resolve_all(mill.endpoint, [n.node for n in adapter.nodes])
    assert set(statuses.values()) == {"Good"}, f"nodes not Good on the server: {statuses}"


@pytest.mark.integration
async def test_walk_is_bounded_by_depth_and_node_count(mill: OpcUaMachineServer) -> None:
    async with Client(mill.endpoint, timeout=5) as client:
        nodes, truncated = await walk(client, max_depth=1)
        assert not truncated
        assert {n.depth for n in nodes} == {1}
        machine = next(n for n in nodes if n.browse_name == "Machine")
        assert machine.more, "children past the depth limit are flagged"
        nodes, truncated = await walk(client, max_nodes=3)
        assert truncated and len(nodes) == 3


@pytest.mark.integration
async def test_secure_browse_trusts_on_first_use_and_the_config_reuses_that_trust(
    mill: OpcUaMachineServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    cfg = adapter_cfg(
        name="mill-1-opcua",
        machine="mill-1",
        endpoint=mill.endpoint,
        security_policy="Basic256Sha256",
        security_mode="SignAndEncrypt",
        allow_insecure=False,
        trust_on_first_use=True,
    )
    result = await browse_server(cfg, state_dir=state, log=LOG)
    cert, key, trusted = identity_paths(cfg, state)
    assert (trusted / "mill-1-opcua.der").read_bytes() == mill.certificate_path.read_bytes()
    out = tmp_path / "conf" / "site.yaml"
    out.parent.mkdir()
    out.write_text(
        build_site_config(
            result, cfg, out=out, machine="mill-1", trust_dir=trusted, certificate=(cert, key)
        )
    )
    (adapter,) = load_site_config(out).adapters
    assert isinstance(adapter, OpcUaAdapterConfig)
    assert adapter.trust_dir is not None and adapter.trust_dir.resolve() == trusted.resolve()
    # the gateway, without first-use trust and in another state dir, trusts the same server
    strict = adapter.model_copy(update={"trust_on_first_use": False})
    client = await open_client(strict, state_dir=tmp_path / "gateway-state", log=LOG)
    await disconnect(client)
