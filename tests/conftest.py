"""Shared fixtures: real servers on free loopback ports, data in the test's temp dir."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.helpers.servers import InfluxDB1, Mosquitto, VictoriaMetrics

# CI runs the same generated examples every time (a red build must be reproducible);
# HYPOTHESIS_PROFILE=explore draws new ones, which is how new bugs are found locally.
settings.register_profile("repeatable", derandomize=True, deadline=None)
settings.register_profile("explore", deadline=None, max_examples=500)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "repeatable"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "mosquitto") as server:
        yield server


@pytest.fixture
def influxdb1(tmp_path: Path) -> Iterator[InfluxDB1]:
    with InfluxDB1(tmp_path / "influxdb") as server:
        yield server


@pytest.fixture
def victoriametrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    with VictoriaMetrics(tmp_path / "vm") as server:
        yield server
