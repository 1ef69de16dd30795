"""Shared fixtures: real servers on free loopback ports, data in the test's temp dir.

Every fixture here that starts a server is declared with ``starts_server``: a test using one
must be marked ``integration`` (or ``e2e`` / ``faults``, which imply it), or the collection
stops naming the test and the fixture (tests/helpers/markers.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from tests.helpers.markers import check_kinds, starts_server
from tests.helpers.node_opcua import NodeOpcuaServer
from tests.helpers.servers import InfluxDB1, Mosquitto, VictoriaMetrics

# CI runs the same generated examples every time (a red build must be reproducible);
# HYPOTHESIS_PROFILE=explore draws new ones, which is how new bugs are found locally.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects: the rule holds for every test
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    check_kinds(items)


@pytest.fixture
@starts_server("Mosquitto")
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
@starts_server("InfluxDB 1.x")
def influxdb1(tmp_path: Path) -> Iterator[InfluxDB1]:
    with InfluxDB1(tmp_path / "influxdb") as server:
        yield server


@pytest.fixture
@starts_server("VictoriaMetrics")
def victoriametrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path / "vm") as server:
        yield server


@pytest.fixture
@starts_server("node-opcua OPC UA server")
def node_opcua(tmp_path: Path) -> Iterator[Callable[..., NodeOpcuaServer]]:
    """Start node-opcua servers, ``node_opcua(security=[...], users={...})``; all stopped after."""
    started: list[NodeOpcuaServer] = []

    def start(**options: Any) -> NodeOpcuaServer:
        server = NodeOpcuaServer(tmp_path / f"node-opcua-{len(started)}", **options)
        started.append(server)
        server.start()
        return server

    yield start
    for server in started:
        server.stop()
