"""The spine, end to end: simulated workshop → OPC UA + MQTT → gateway → every kind of sink.

Real Mosquitto, real InfluxDB 1.x (``/write``), real VictoriaMetrics (influxdb-client's
``/api/v2/write``) and the embedded local history, all fed by one accelerated run of the
simulated workshop; every sink is then read back and checked against the simulators' ground
truth: every counter value the machines published is stored, at the machine's timestamp, with
the machine's value.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.config import InfluxSettings, SiteConfig
from microfactory.gateway.runtime import Gateway
from microfactory.gateway.sinks import Sink, SinkContext
from microfactory.gateway.sinks.influxdb.v2 import InfluxV2Sink
from microfactory.sim.truth import GroundTruth, load_truth
from tests.helpers.markers import starts_server
from tests.helpers.servers import InfluxDB1, Mosquitto, VictoriaMetrics
from tests.helpers.workshop import assembly_own_counter, workshop_through_gateway

pytestmark = pytest.mark.e2e

MACHINES = ("mill-1", "laser-1", "printer-1", "assembly-1", "meter-1")
COUNTERS = ("part_count", "good_count", "scrap_count", "energy_active")
SPEED = 60.0  # simulated seconds per wall second
RUN_WALL_S = 20.0  # 20 simulated minutes: dozens of parts, setups, maybe a fault

Series = dict[tuple[str, str], dict[int, float]]  # (machine, signal) -> ts_ns -> value


async def _run_workshop_through_gateway(
    tmp_path: Path, mosquitto: Mosquitto, influxdb1: InfluxDB1, vm: VictoriaMetrics
) -> tuple[GroundTruth, Gateway]:
    def configure(data: dict[str, Any]) -> None:
        assembly_own_counter(data)  # every value the machines publish, stored as published
        data["influxdb"] = {"api": "v1", "url": influxdb1.url, "database": "spine"}
        data["local_history"]["enabled"] = True

    def vm_sink(site: SiteConfig) -> list[Sink]:
        return [
            InfluxV2Sink(
                InfluxSettings(api="v2", url=vm.url, org="microfactory", bucket="spine", token="t"),
                SinkContext(site.site, tmp_path, logging.getLogger("test")),
                name="victoriametrics",
            )
        ]

    async with workshop_through_gateway(
        tmp_path,
        mosquitto.url,
        seed=11,
        speed=SPEED,
        power_loss_probability=2.0,  # per simulated hour: counters reset now and then
        data_dir=tmp_path / "gateway",
        site_name="e2e site",
        configure=configure,
        extra_sinks=vm_sink,
    ) as shop:
        await asyncio.sleep(RUN_WALL_S)
        await shop.finish()
    return load_truth(shop.truth_dir), shop.gateway


def _expected(truth: GroundTruth) -> Series:
    """What a sink must hold: each published counter value at its timestamp.

    OPC UA reports a value only when it changes, so a value repeated by the machine is
    expected once, at the time it first took it.
    """
    out: Series = defaultdict(dict)
    for machine in MACHINES:
        for signal in COUNTERS:
            previous: float | None = None
            for rec in sorted(truth.published_of(machine, signal), key=lambda r: r.ts_ns):
                if rec.value != previous:
                    out[(machine, signal)][rec.ts_ns] = float(rec.value)
                previous = rec.value
    return out


def _influx_series(influxdb1: InfluxDB1) -> Series:
    out: Series = defaultdict(dict)
    signals = "|".join(COUNTERS)
    for row in influxdb1.rows(
        f'SELECT "value" FROM "telemetry" WHERE "signal" =~ /^({signals})$/ '
        'GROUP BY "machine", "signal"',
        "spine",
    ):
        out[(row["machine"], row["signal"])][int(row["time"])] = float(row["value"])
    return out


def _vm_series(vm: VictoriaMetrics) -> Series:
    """VictoriaMetrics keeps milliseconds: keys are ts rounded down to the ms, in ns."""
    out: Series = defaultdict(dict)
    for series in vm.export('{__name__="telemetry_value"}'):
        labels = series["metric"]
        key = (labels["machine"], labels["signal"])
        for ts_ms, value in zip(series["timestamps"], series["values"], strict=True):
            out[key][int(ts_ms) * 1_000_000] = float(value)
    return out


def _history_series(path: Path) -> Series:
    out: Series = defaultdict(dict)
    with sqlite3.connect(path) as db:
        for machine, signal, ts_ns, value in db.execute(
            "SELECT machine, signal, ts_ns, value FROM telemetry WHERE value IS NOT NULL"
        ):
            out[(machine, signal)][ts_ns] = value
    return out


def _missing(expected: Series, stored: Series, *, ms: bool = False) -> list[str]:
    problems = []
    for key, points in expected.items():
        got = stored.get(key, {})
        for ts, value in points.items():
            at = ts - ts % 1_000_000 if ms else ts
            if at not in got:
                problems.append(f"{key} missing at {ts}: {value}")
            elif got[at] != pytest.approx(value, rel=1e-9, abs=1e-9):
                problems.append(f"{key} at {ts}: stored {got[at]}, machine said {value}")
    return problems


@dataclass
class SpineRun:
    truth: GroundTruth
    gateway: Gateway
    data_dir: Path
    influxdb1: InfluxDB1
    vm: VictoriaMetrics


@pytest.fixture(scope="module")
@starts_server("Mosquitto, InfluxDB 1.x, VictoriaMetrics and the simulated workshop")
def spine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpineRun]:
    """One accelerated run shared by the tests of this module (it is the expensive part)."""
    tmp_path = tmp_path_factory.mktemp("spine")
    with (
        Mosquitto(tmp_path / "mosquitto") as mosquitto,
        InfluxDB1(tmp_path / "influxdb") as influxdb1,
        VictoriaMetrics(tmp_path / "vm") as vm,
    ):
        truth, gw = asyncio.run(_run_workshop_through_gateway(tmp_path, mosquitto, influxdb1, vm))
        yield SpineRun(truth, gw, tmp_path / "gateway", influxdb1, vm)


def test_workshop_to_every_sink_matches_ground_truth(spine: SpineRun) -> None:
    truth, gw = spine.truth, spine.gateway
    expected = _expected(truth)

    # the run was long enough to mean something
    parts = {m: len(truth.parts_of(m)) for m in MACHINES}
    assert parts["mill-1"] >= 5 and parts["laser-1"] >= 10 and parts["assembly-1"] >= 10, parts
    assert all(expected[(m, "energy_active")] for m in MACHINES)
    assert not gw.health.dead_lettered, gw.health.dead_lettered
    assert gw.health.sink_errors == {} or all(gw.health.delivered.values())

    influx = _influx_series(spine.influxdb1)
    vm = _vm_series(spine.vm)
    history = _history_series(spine.data_dir / "history.sqlite")
    assert _missing(expected, influx) == []
    assert _missing(expected, history) == []
    assert _missing(expected, vm, ms=True) == []

    # every part counter increment is there, on every machine that makes parts
    for machine in ("mill-1", "laser-1", "printer-1", "assembly-1"):
        counts = {p.part_count for p in truth.parts_of(machine)}
        for name, stored in (("influxdb", influx), ("history", history), ("vm", vm)):
            assert counts <= set(stored[(machine, "part_count")].values()), (name, machine)

    # the three sinks hold the same telemetry: one schema, one pipeline
    counters_in_history = {k: len(v) for k, v in history.items() if k[1] in COUNTERS}
    assert {k: len(v) for k, v in influx.items()} == counters_in_history
    for sink in ("influxdb", "local_history", "victoriametrics"):
        assert gw.health.delivered[sink] == gw.health.spooled, sink


def test_every_point_carries_machine_and_site_tags(spine: SpineRun) -> None:
    influxdb1 = spine.influxdb1
    tags = influxdb1.query('SHOW TAG VALUES FROM "telemetry" WITH KEY = "machine"', "spine")
    machines = {v[1] for v in tags[0]["values"]}
    assert machines == set(MACHINES)
    untagged = influxdb1.query(
        'SELECT count("value") FROM "telemetry" WHERE "machine" = \'\'', "spine"
    )
    assert untagged == []
    units = influxdb1.rows(
        'SELECT last("value") FROM "telemetry" WHERE "signal" = \'energy_active\' GROUP BY "unit"',
        "spine",
    )
    assert {r["unit"] for r in units} == {"Wh"}  # the meter's kWh converted on the way in
