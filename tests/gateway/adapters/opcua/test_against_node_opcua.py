"""The OPC UA adapter against node-opcua, a server implementation none of us wrote.

One server per module offers every policy and mode, anonymous and user-name tokens, and
trusts one client certificate. The tests run the real adapter (the gateway's plugin, a
recording emitter that applies the pipeline's normaliser) and check what it stores and
logs: the security matrix, trust decisions, per-node health in both modes, values as the
server encodes them, and time.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.adapters.opcua import plugin
from microfactory.gateway.adapters.opcua.adapter import OpcUaAdapter
from microfactory.gateway.adapters.opcua.certificates import create_certificate
from microfactory.gateway.sdk import AdapterContext
from microfactory.gateway.testing import RecordingEmitter
from tests.helpers.markers import starts_server
from tests.helpers.node_opcua import EVERY_SECURITY, NodeOpcuaServer, nsu

pytestmark = pytest.mark.integration

CLIENT_URI = "urn:microfactory:test:gateway"
USER, PASSWORD = "operator", "c0rrect-horse"
# our policy names -> node-opcua's
POLICY = {
    "Basic256Sha256": "Basic256Sha256",
    "Aes128Sha256RsaOaep": "Aes128_Sha256_RsaOaep",
    "Aes256Sha256RsaPss": "Aes256_Sha256_RsaPss",
}


@dataclass
class Site:
    server: NodeOpcuaServer
    certificate: Path
    private_key: Path
    untrusted_certificate: Path
    untrusted_key: Path


@pytest.fixture(scope="module")
@starts_server("node-opcua OPC UA server")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("node-opcua-adapter")
    cert, key = create_certificate(root / "client", application_uri=CLIENT_URI)
    bad_cert, bad_key = create_certificate(root / "stranger", application_uri=CLIENT_URI)
    server = NodeOpcuaServer(
        root / "server",
        security=EVERY_SECURITY,
        users={USER: PASSWORD},
        trusted_client_certificates=[cert],
        update_ms=100,
    )
    with server:
        yield Site(server, cert, key, bad_cert, bad_key)


def config(site: Site, tmp: Path, **over: Any) -> dict[str, Any]:
    trust = tmp / "trusted"
    trust.mkdir(parents=True, exist_ok=True)
    shutil.copy(site.server.certificate_path, trust / "node-opcua.der")
    data: dict[str, Any] = {
        "type": "opcua",
        "name": "cell",
        "machine": "cell-1",
        "endpoint": site.server.endpoint,
        "certificate": str(site.certificate),
        "private_key": str(site.private_key),
        "trust_dir": str(trust),
        "publishing_interval_ms": 100,
        "timeout_s": 2,
        "watchdog_s": 0.5,
        "reconnect_max_s": 1,
        "nodes": [{"node": nsu("Machine.Power"), "signal": "power_active", "unit": "kW"}],
    }
    data.update(over)
    return data


@asynccontextmanager
async def running(
    data: dict[str, Any], tmp: Path
) -> AsyncIterator[tuple[OpcUaAdapter, RecordingEmitter]]:
    cfg = plugin.config_model.model_validate(data)
    emitter = RecordingEmitter(adapter=cfg.name, machines={"cell-1"})
    state = tmp / "state"
    state.mkdir(parents=True, exist_ok=True)
    context = AdapterContext(
        site="test",
        machines=frozenset({"cell-1"}),
        emitter=emitter,
        logger=logging.getLogger(f"microfactory.test.{cfg.name}"),
        state_dir=state,
    )
    adapter = plugin.load()(cfg, context)
    assert isinstance(adapter, OpcUaAdapter)
    await adapter.start()
    try:
        yield adapter, emitter
    finally:
        await adapter.stop(5)
    assert emitter.violations == []


async def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


def same_bytes(a: Path, b: Path) -> bool:
    return a.is_file() and a.read_bytes() == b.read_bytes()


def signal_samples(emitter: RecordingEmitter, signal: str) -> list[Any]:
    return [s for s in emitter.samples if s.signal == signal]


MATRIX = [
    (policy, mode, user)
    for policy, mode in ((p, m) for p in POLICY for m in ("Sign", "SignAndEncrypt"))
    for user in (False, True)
]


@pytest.mark.parametrize(
    ("policy", "mode", "user"),
    MATRIX,
    ids=[f"{p}-{m}-{'user' if u else 'anonymous'}" for p, m, u in MATRIX],
)
async def test_security_matrix(
    site: Site, tmp_path: Path, policy: str, mode: str, user: bool
) -> None:
    assert (POLICY[policy], mode) in EVERY_SECURITY
    over: dict[str, Any] = {"security_policy": policy, "security_mode": mode}
    if user:
        over |= {"username": USER, "password": PASSWORD}
    async with running(config(site, tmp_path, **over), tmp_path) as (adapter, emitter):
        await wait_for(lambda: len(signal_samples(emitter, "power_active")) >= 3, 20, "power")
    assert adapter.sessions == 1 and adapter.supervisor.failures == 0


async def test_insecure_when_allowed(site: Site, tmp_path: Path) -> None:
    data = config(site, tmp_path, security_policy="None", security_mode="None", allow_insecure=True)
    async with running(data, tmp_path) as (_, emitter):
        await wait_for(lambda: len(signal_samples(emitter, "power_active")) >= 3, 20, "power")


async def test_untrusted_server_is_refused_until_its_file_is_copied(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = config(site, tmp_path)
    trust = Path(data["trust_dir"])
    (trust / "node-opcua.der").unlink()
    caplog.set_level(logging.WARNING)
    async with running(data, tmp_path) as (adapter, emitter):
        await wait_for(lambda: "is not trusted" in caplog.text, 15, "the refusal")
        assert emitter.samples == []
        line = next(r.getMessage() for r in caplog.records if "is not trusted" in r.getMessage())
        rejected = Path(line.split("then copy ", 1)[1].split(" into ")[0])
        assert same_bytes(rejected, site.server.certificate_path)
        assert str(trust) in line
        shutil.copy(rejected, trust)
        await wait_for(lambda: len(emitter.samples) > 0, 20, "data once trusted")
    assert adapter.sessions == 1


async def test_trust_on_first_use_pins_the_certificate(site: Site, tmp_path: Path) -> None:
    data = config(site, tmp_path, trust_on_first_use=True)
    trust = Path(data["trust_dir"])
    (trust / "node-opcua.der").unlink()
    async with running(data, tmp_path) as (_, emitter):
        await wait_for(lambda: len(emitter.samples) > 0, 20, "data")
    assert same_bytes(trust / "cell.der", site.server.certificate_path)


async def test_server_refusing_our_certificate_says_which_file_to_trust(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = config(
        site,
        tmp_path,
        certificate=str(site.untrusted_certificate),
        private_key=str(site.untrusted_key),
    )
    caplog.set_level(logging.WARNING)
    async with running(data, tmp_path) as (_, emitter):
        await wait_for(lambda: "refused the gateway's certificate" in caplog.text, 20, "refusal")
        assert "internal error" not in caplog.text
        assert emitter.samples == []
    assert str(site.untrusted_certificate) in caplog.text


async def test_wrong_password_is_named_and_never_logged(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = config(site, tmp_path, username=USER, password="wr0ng-horse")
    caplog.set_level(logging.DEBUG)
    async with running(data, tmp_path) as (_, emitter):
        await wait_for(lambda: f"refused user {USER!r}" in caplog.text, 20, "refusal")
        assert emitter.samples == []
    assert "wr0ng-horse" not in caplog.text and PASSWORD not in caplog.text


async def test_offer_is_listed_when_nothing_matches(
    node_opcua: Callable[..., NodeOpcuaServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = node_opcua(security=[("Basic256Sha256", "Sign")])
    data = {
        "type": "opcua",
        "name": "cell",
        "machine": "cell-1",
        "endpoint": server.endpoint,
        "trust_on_first_use": True,
        "nodes": [{"node": nsu("Machine.Power"), "signal": "power_active"}],
    }
    caplog.set_level(logging.WARNING)
    async with running(data, tmp_path):
        await wait_for(lambda: "offers" in caplog.text, 15, "the offer")
    assert "offers Basic256Sha256/Sign, not Basic256Sha256/SignAndEncrypt" in caplog.text


NODES_WITH_TROUBLE = [
    {"node": nsu("Machine.Power"), "signal": "power_active", "unit": "kW"},
    {"node": nsu("Machine.BadNode"), "signal": "temperature"},
    {"node": nsu("Machine.NoSuchNode"), "signal": "torque"},
    {"node": nsu("Machine.UncertainNode"), "signal": "temperature_spindle"},
    {"node": nsu("Machine.GoodThenBad"), "signal": "temperature_coolant"},
    {"node": nsu("Machine.Temperature"), "signal": "temperature_bed"},
]


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
async def test_one_bad_node_affects_that_node_only(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    nodes = [{**n, "mode": mode, "poll_interval_ms": 100} for n in NODES_WITH_TROUBLE]
    caplog.set_level(logging.INFO)
    async with running(config(site, tmp_path, nodes=nodes), tmp_path) as (adapter, emitter):
        await wait_for(
            lambda: (
                len(signal_samples(emitter, "temperature_bed")) >= 10
                and any(s.quality == "good" for s in signal_samples(emitter, "temperature_coolant"))
                and any(s.quality == "bad" for s in signal_samples(emitter, "temperature_coolant"))
            ),
            30,
            "the nodes after the bad ones, and GoodThenBad both ways",
        )
    assert adapter.sessions == 1, "a bad node must not end the session"
    assert adapter.supervisor.failures == 0
    assert emitter.gaps == []
    bad = signal_samples(emitter, "temperature")
    assert bad and {(s.value, s.quality) for s in bad} == {("BadSensorFailure", "bad")}
    uncertain = signal_samples(emitter, "temperature_spindle")
    assert uncertain and all(
        s.quality == "uncertain" and isinstance(s.value, float) for s in uncertain
    )
    unknown = [r.getMessage() for r in caplog.records if "NoSuchNode" in r.getMessage()]
    assert len(unknown) == 1 and "BadNodeIdUnknown" in unknown[0], unknown
    assert emitter.refused == [], emitter.refused[:3]


async def test_values_as_the_server_encodes_them(site: Site, tmp_path: Path) -> None:
    nodes = [
        {"node": nsu("Machine.Phases"), "elements": ["voltage_l1", "voltage_l2", "voltage_l3"]},
        {
            "node": nsu("Machine.StateCode"),
            "signal": "state",
            "value_map": {0: "off", 1: "idle", 2: "running", 3: "fault"},
        },
        {"node": nsu("Machine.StateEnum"), "signal": "mode"},
        {"node": nsu("Machine.StateEnumValues"), "signal": "mode_values"},
        {"node": nsu("Machine.StartTime"), "signal": "started_at"},
        {"node": nsu("Machine.Running"), "signal": "running_flag"},
        {"node": nsu("Machine.PartCount"), "signal": "part_count"},
    ]
    async with running(config(site, tmp_path, nodes=nodes), tmp_path) as (_, emitter):
        await wait_for(
            lambda: (
                len({s.value for s in signal_samples(emitter, "state")}) >= 3
                and len({s.value for s in signal_samples(emitter, "mode")}) >= 2
                and len({s.value for s in signal_samples(emitter, "mode_values")}) >= 2
            ),
            30,
            "states, enum names",
        )
    assert emitter.refused == [] and emitter.dead_letters == []
    assert {s.value for s in signal_samples(emitter, "state")} <= {
        "off",
        "idle",
        "running",
        "fault",
    }
    assert {s.value for s in signal_samples(emitter, "mode")} <= {"Off", "Idle", "Running", "Fault"}
    assert {s.value for s in signal_samples(emitter, "mode_values")} <= {
        "Off",
        "Idle",
        "Running",
        "Fault",
    }
    for name in ("voltage_l1", "voltage_l2", "voltage_l3"):
        assert all(isinstance(s.value, float) for s in signal_samples(emitter, name))
        assert signal_samples(emitter, name)
    started = signal_samples(emitter, "started_at")
    assert started and all(isinstance(s.value, str) and s.value[:2] == "20" for s in started)
    assert {s.value for s in signal_samples(emitter, "running_flag")} <= {0.0, 1.0}


async def test_frozen_source_timestamp_is_visible_and_server_time_separates_values(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = [
        {"node": nsu("Machine.FrozenTs"), "signal": "frozen_source"},
        {
            "node": nsu("Machine.FrozenTs"),
            "signal": "frozen_server",
            "index": None,
            "timestamp": "server",
            "mode": "poll",
            "poll_interval_ms": 100,
        },
    ]
    # the same node twice is refused (one mapping per node) — so poll it from a second adapter
    first = config(site, tmp_path / "a", nodes=nodes[:1])
    second = config(site, tmp_path / "b", name="cell-b", nodes=[nodes[1]])
    caplog.set_level(logging.WARNING)
    async with (
        running(first, tmp_path / "a") as (_, source),
        running(second, tmp_path / "b") as (_, server),
    ):
        await wait_for(
            lambda: len(source.samples) >= 5 and len(server.samples) >= 5, 20, "frozen values"
        )
    assert len({s.ts_ns for s in source.samples}) == 1
    assert len({s.ts_ns for s in server.samples}) >= 4
    warnings = [r.getMessage() for r in caplog.records if "same source timestamp" in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].startswith("cell: "), warnings  # not cell-b


async def test_deadband_filters_on_the_server_and_a_refused_filter_is_that_nodes_problem(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nodes = [
        # Power moves within 5..15.6 kW: an absolute band of 100 lets only the first through
        {
            "node": nsu("Machine.Power"),
            "signal": "power_active",
            "unit": "kW",
            "deadband": {"type": "absolute", "value": 100},
        },
        # 50 % of Temperature's EURange (-20..200 degC) is 110 degC; it moves within 40..45
        {
            "node": nsu("Machine.Temperature"),
            "signal": "temperature_spindle",
            "deadband": {"type": "percent", "value": 50},
        },
        # a plain variable has no EURange: the server refuses a percent band on it
        {
            "node": nsu("Machine.PartCount"),
            "signal": "part_count",
            "deadband": {"type": "percent", "value": 10},
        },
        {"node": nsu("Machine.Phases"), "elements": ["voltage_l1", "voltage_l2", "voltage_l3"]},
    ]
    caplog.set_level(logging.WARNING)
    async with running(config(site, tmp_path, nodes=nodes), tmp_path) as (adapter, emitter):
        await wait_for(lambda: len(signal_samples(emitter, "voltage_l1")) >= 25, 20, "flow")
    assert len(signal_samples(emitter, "power_active")) == 1
    assert len(signal_samples(emitter, "temperature_spindle")) == 1
    assert signal_samples(emitter, "part_count") == []
    refused = [r.getMessage() for r in caplog.records if "PartCount" in r.getMessage()]
    assert len(refused) == 1 and "BadMonitoredItemFilterUnsupported" in refused[0], refused
    assert adapter.sessions == 1 and adapter.supervisor.failures == 0


async def test_a_machine_switched_off_is_one_line_away_and_one_line_back(
    node_opcua: Callable[..., NodeOpcuaServer], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = create_certificate(tmp_path / "client", application_uri=CLIENT_URI)
    server = node_opcua(
        security=[("Basic256Sha256", "SignAndEncrypt")], trusted_client_certificates=[cert]
    )
    data = {
        "type": "opcua",
        "name": "cell",
        "machine": "cell-1",
        "endpoint": server.endpoint,
        "certificate": str(cert),
        "private_key": str(key),
        "trust_on_first_use": True,
        "timeout_s": 1,
        "watchdog_s": 0.3,
        "reconnect_max_s": 1,
        "nodes": [{"node": nsu("Machine.Power"), "signal": "power_active", "unit": "kW"}],
    }
    caplog.set_level(logging.DEBUG, logger="microfactory.test.cell")
    async with running(data, tmp_path) as (adapter, emitter):
        await wait_for(lambda: adapter.supervisor.state == "connected", 20, "connected")
        await asyncio.to_thread(server.stop)
        await wait_for(lambda: adapter.supervisor.failures >= 5, 30, "five failed attempts")
        await asyncio.to_thread(server.start)
        await wait_for(lambda: adapter.sessions == 2, 30, "connected again")
    ours = [r for r in caplog.records if r.name == "microfactory.test.cell"]
    loud = [
        (r.levelname, r.getMessage())
        for r in ours
        if r.levelno >= logging.INFO and "trusted on first use" not in r.getMessage()
    ]
    assert [lvl for lvl, _ in loud] == ["INFO", "WARNING", "INFO", "INFO"], loud
    assert loud[0][1] == "cell: connected"
    assert "BadShutdown" in loud[1][1] or "Connection" in loud[1][1], loud[1]
    assert "connected again after" in loud[2][1]
    assert loud[3][1] == "cell: stopped"
    assert len(emitter.gaps) == 1
