"""Browse → written config → config check → gateway → stored data, against both servers.

What an integrator does on day one, end to end and secured: `microfactory opcua browse`
writes the site config (here through the same functions the command calls), the config
loads unchanged, and a real gateway run from it stores every mapped signal of the simulated
mill (asyncua) and of the node-opcua server (with its Machinery / Machine Tools objects).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from microfactory.gateway.adapters.opcua.browse import browse_server, identity_paths
from microfactory.gateway.adapters.opcua.certificates import create_certificate
from microfactory.gateway.adapters.opcua.config import OpcUaAdapterConfig
from microfactory.gateway.adapters.opcua.snippet import build_site_config
from microfactory.gateway.config import load_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.sim.machines import MILL
from microfactory.sim.model import MachineModel
from microfactory.sim.opcua_machine import OpcUaMachineServer
from tests.helpers.node_opcua import NodeOpcuaServer
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.e2e

LOG = logging.getLogger("test.browse")


async def _browse_and_run(
    cfg: OpcUaAdapterConfig, machine: str, tmp: Path, run_s: float
) -> tuple[OpcUaAdapterConfig, dict[str, set[str]]]:
    result = await browse_server(cfg, state_dir=tmp / "state", log=LOG)
    cert, key, trusted = identity_paths(cfg, tmp / "state")
    out = tmp / "site.yaml"
    text = build_site_config(
        result, cfg, out=out, machine=machine, trust_dir=trusted, certificate=(cert, key)
    )
    out.write_text(text)
    load_site_config(out)  # what `config check` runs: the file as written
    # the gateway's own files go to the test's folder
    out.write_text(
        text
        + f"spool: {{path: {tmp / 'spool.sqlite'}}}\n"
        + f"local_history: {{path: {tmp / 'history.sqlite'}}}\n"
        + "health: {port: 0}\n"
    )
    site = load_site_config(out)
    (adapter,) = site.adapters
    assert isinstance(adapter, OpcUaAdapterConfig)
    gw = Gateway(site)
    await gw.start()
    try:
        await wait_for(
            lambda: gw.health.connections.get(adapter.name) == "connected", 30, "connected"
        )
        await asyncio.sleep(run_s)
    finally:
        await gw.stop(timeout_s=10)
    with sqlite3.connect(tmp / "history.sqlite") as db:
        rows = db.execute("SELECT signal, quality FROM telemetry WHERE machine = ?", (machine,))
        stored: dict[str, set[str]] = {}
        for signal, quality in rows:
            stored.setdefault(signal, set()).add(quality)
    return adapter, stored


async def test_round_trip_on_the_simulated_mill(tmp_path: Path) -> None:
    mill = OpcUaMachineServer(
        machine_id="mill-1", kind="cnc_mill", port=0, pki_dir=tmp_path / "mill-pki"
    )
    await mill.start()
    # now, in whole ms: older samples would fall outside the local history's retention
    model = MachineModel(MILL, seed=2, start_ns=time.time_ns() // 1_000_000 * 1_000_000)
    await mill.publish(model.snapshot(), tick=True)
    cfg = OpcUaAdapterConfig(
        name="mill-1-opcua",
        machine="mill-1",
        endpoint=mill.endpoint,
        trust_on_first_use=True,
        companion="auto",
    )
    try:
        adapter, stored = await _browse_and_run(cfg, "mill-1", tmp_path, 2.0)
    finally:
        await mill.stop()
    mapped = {s for n in adapter.nodes for s in n.signals}
    assert {"state", "program", "part_count", "good_count", "power_active"} <= mapped
    assert set(stored) == mapped, f"mapped but not stored: {mapped - set(stored)}"
    assert all(q == {"good"} for q in stored.values()), stored


async def test_round_trip_on_node_opcua(
    node_opcua: Callable[..., NodeOpcuaServer], tmp_path: Path
) -> None:
    cert, key = create_certificate(tmp_path / "pki", application_uri="urn:test:gateway")
    server = node_opcua(
        security=[("Basic256Sha256", "SignAndEncrypt")],
        trusted_client_certificates=[cert],
        companion=True,
        update_ms=100,
    )
    cfg = OpcUaAdapterConfig(
        name="cell-1-opcua",
        machine="cell-1",
        endpoint=server.endpoint,
        certificate=cert,
        private_key=key,
        trust_on_first_use=True,
        companion="auto",
    )
    adapter, stored = await _browse_and_run(cfg, "cell-1", tmp_path, 3.0)
    mapped = {s for n in adapter.nodes for s in n.signals}
    assert {"state", "part_count", "good_count", "power_active"} <= mapped, mapped
    missing = mapped - set(stored)
    assert not missing, f"mapped but not stored: {missing}"
    # the broken sensor is stored as what it is; the others are good
    bad = {s for s, q in stored.items() if "bad" in q}
    good = {s for s, q in stored.items() if q == {"good"}}
    assert bad and len(good) >= len(mapped) - len(bad) - 1, stored
