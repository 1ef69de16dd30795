"""The simulated workshop through everything: simulators -> real Mosquitto / OPC UA -> the real
gateway (context tagging, event derivation) -> MQTT QoS 1 -> the MES, checked against the
simulators' ground truth: parts and scrap exact, energy per part within 1 %, OEE as computed
by hand from the state log, and the genealogy of a material lot both ways."""

from __future__ import annotations

import asyncio
import itertools
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from microfactory.cli.ports import free_port
from microfactory.gateway.runtime import Gateway
from microfactory.mes.demo import DemoMes, start_demo_mes
from microfactory.mes.timeutil import from_ns, to_ns
from microfactory.sim.truth import STATES_FILE, GroundTruth, PartRecord, load_truth
from microfactory.sim.workshop import Workshop
from tests.helpers.servers import Mosquitto
from tests.helpers.workshop import RunningWorkshop, assembly_own_counter, workshop_through_gateway

pytestmark = pytest.mark.e2e

S = 1_000_000_000
SPEED = 40.0
RUN_WALL_S = 30.0
OPERATOR = ("operator", "operator")
MANAGER = ("manager", "manager")
RUNS = {  # machine -> (order, operation seq)
    "laser-1": ("SO-1001", 10),
    "mill-1": ("SO-1001", 20),
    "printer-1": ("SO-1002", 10),
    "assembly-1": ("SO-1002", 20),
}


async def _eventually(check: Any, what: str, timeout_s: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.2)


@dataclass
class Shop:
    mes: DemoMes
    api: httpx.AsyncClient
    gateway: Gateway
    workshop: Workshop
    data_dir: Path


async def _get_all(api: httpx.AsyncClient, path: str, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    while True:
        r = await api.get(
            path, params={**params, "limit": 1000, "offset": len(items)}, auth=MANAGER
        )
        assert r.status_code == 200, r.text
        page = r.json()
        items += page["items"]
        if len(items) >= page["total"]:
            return items


def _running_seconds(truth: GroundTruth, machine: str, start_ns: int, end_ns: int) -> float:
    """By hand from the simulator's state log: time spent running inside [start, end)."""
    states = sorted(truth.states_of(machine), key=lambda s: s.ts_ns)
    total = 0
    for i, st in enumerate(states):
        if st.state != "running":
            continue
        lo = max(st.ts_ns, start_ns)
        hi = min(states[i + 1].ts_ns if i + 1 < len(states) else end_ns, end_ns)
        total += max(0, hi - lo)
    return total / S


async def test_workshop_through_gateway_into_the_mes(mosquitto: Mosquitto, tmp_path: Path) -> None:
    data_dir = tmp_path / "edge"
    # simulated time starts in the past and stays behind the wall clock for the whole run, so
    # back-dated run starts and completions are in the past too (the MES refuses the future)
    origin = time.time_ns() - int(SPEED * (RUN_WALL_S + 60) * S)
    mes = await start_demo_mes(
        host="127.0.0.1",
        port=free_port(),
        mqtt_url=mosquitto.url,
        site="demo",
        data_dir=tmp_path / "mes",
        start_batches=False,
    )
    api = httpx.AsyncClient(base_url=mes.api, timeout=30)
    try:
        async with workshop_through_gateway(
            tmp_path,
            mosquitto.url,
            seed=11,
            speed=SPEED,
            power_loss_probability=4.0,  # per simulated hour: counter resets do happen
            start_ns=origin,
            data_dir=data_dir,
            site_name="e2e",
            configure=assembly_own_counter,  # at 40x a meter polled in wall time is too coarse
            stop_timeout_s=5.0,
        ) as running:
            await _through_the_mes(running, mes, api, tmp_path, data_dir)
    finally:
        await api.aclose()
        await mes.stop()


async def _through_the_mes(
    running: RunningWorkshop, mes: DemoMes, api: httpx.AsyncClient, tmp_path: Path, data_dir: Path
) -> None:
    site, gw, workshop = running.site, running.gateway, running.workshop
    assert site.mes_link is not None and site.mes_link.events
    shop = Shop(mes, api, gw, workshop, data_dir)
    pipeline = gw.pipeline
    assert pipeline is not None, "a started gateway has its pipeline"
    await _eventually(
        lambda: (
            all((m, "part_count") in pipeline.last for m in RUNS)
            and all((m, "energy_active") in pipeline.last for m in RUNS)
        ),
        "first counters of every machine at the gateway",
    )
    clock = workshop.clock
    assert clock is not None
    t_a = clock.now_ns() // 1_000_000 * 1_000_000
    run_ids = await _start_batches(shop, t_a)
    # the MES's retained context reaches the gateway, which tags samples with it
    link = running.mes_link()
    await _eventually(
        lambda: all(link.context.get(m, {}).get("batch") for m in RUNS), "machine contexts"
    )
    assert link.context["laser-1"] == {
        "order": "SO-1001",
        "batch": "SO-1001-01",
        "operation": "10:laser cut blank",
        "product": "BRK-100",
    }
    await asyncio.sleep(RUN_WALL_S)
    t_b = clock.now_ns() // 1_000_000 * 1_000_000
    for run_id in run_ids.values():
        r = await api.post(
            f"/runs/{run_id}/complete", json={"at": from_ns(t_b).isoformat()}, auth=OPERATOR
        )
        assert r.status_code == 200, r.text
    # a state's energy is known when it ends: let the states running at t_b end first
    await _eventually(
        lambda: _state_after(running.truth_dir, t_b, ("laser-1", "mill-1")),
        "a state change after the run end on laser-1 and mill-1",
        timeout_s=30,
    )
    await workshop.stop()
    # everything the gateway has goes to the MES before we look
    await _eventually(
        lambda: gw.spool.depth("mes_events") == 0 and gw.health.received == gw.health.spooled,
        "gateway to drain its spool into the MES link",
    )
    await gw.stop(20.0)
    await _settled(mes)
    truth = load_truth(running.truth_dir)
    assert truth.summary, "workshop summary missing"
    await _check_counts_and_energy(shop, truth, run_ids, t_a, t_b)
    await _check_machine_energy(shop, truth, t_a, t_b)
    await _check_oee(shop, truth, t_a, t_b)
    await _check_genealogy(shop, run_ids)
    _check_tagged_history(data_dir, t_a, t_b)
    assert link.published > 0


def _state_after(truth_dir: Path, t_b: int, machines: tuple[str, ...]) -> bool:
    """Every machine has changed state after ``t_b`` (the simulator's state log)."""
    rows = [json.loads(line) for line in (truth_dir / STATES_FILE).read_text().splitlines()]
    return all(any(r["machine"] == m and r["ts_ns"] > t_b for r in rows) for m in machines)


async def _start_batches(shop: Shop, t_a: int) -> dict[str, int]:
    api = shop.api
    orders = {o["code"]: o for o in (await api.get("/orders", auth=MANAGER)).json()["items"]}
    run_ids: dict[str, int] = {}
    for code in ("SO-1001", "SO-1002"):
        r = await api.post(f"/orders/{orders[code]['id']}/release", auth=MANAGER)
        assert r.status_code == 200, r.text
    batches = {
        b["lot_number"]: b for b in (await api.get("/batches", auth=OPERATOR)).json()["items"]
    }
    for machine, (order_code, seq) in RUNS.items():
        batch = batches[f"{order_code}-01"]
        product = (
            await api.get(f"/products/{orders[order_code]['product_id']}", auth=OPERATOR)
        ).json()
        op = next(o for o in product["operations"] if o["seq"] == seq)
        r = await api.post(
            f"/batches/{batch['id']}/start",
            json={"operation_id": op["id"], "machine_id": machine, "at": from_ns(t_a).isoformat()},
            auth=OPERATOR,
        )
        assert r.status_code == 201, r.text
        run_ids[machine] = r.json()["id"]
    r = await api.post(
        f"/batches/{batches['SO-1001-01']['id']}/consume",
        json={"material_lot": "ML-S235-2405", "quantity": 42.0, "run_id": run_ids["laser-1"]},
        auth=OPERATOR,
    )
    assert r.status_code == 201, r.text
    return run_ids


async def _settled(mes: DemoMes) -> None:
    """Wait until the MES bridge has ingested everything the broker holds for it."""
    bridge: Any = mes.runtime.publisher
    last, stable_since = -1, time.monotonic()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = bridge.ingested + bridge.duplicates
        if seen != last:
            last, stable_since = seen, time.monotonic()
        elif time.monotonic() - stable_since > 1.5:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("MES kept ingesting events for 30 s")


def _truth_parts(truth: GroundTruth, machine: str, t_a: int, t_b: int) -> list[PartRecord]:
    return [p for p in truth.parts_of(machine) if t_a <= p.end_ns < t_b]


async def _check_counts_and_energy(
    shop: Shop, truth: GroundTruth, run_ids: dict[str, int], t_a: int, t_b: int
) -> None:
    resets = sum(m.get("resets", 0) for m in truth.summary["machines"].values())
    assert resets >= 1, "no energy counter reset happened; pick another seed"
    for machine, run_id in run_ids.items():
        expected = _truth_parts(truth, machine, t_a, t_b)
        assert len(expected) >= 2, f"{machine}: too few parts in the window to check"
        parts = await _get_all(shop.api, "/parts", run_id=run_id)
        by_ts = {to_ns(datetime.fromisoformat(p["completed_at"])): p for p in parts}
        missing = sorted({p.end_ns for p in expected} - set(by_ts))
        extra = sorted(set(by_ts) - {p.end_ns for p in expected})
        assert len(parts) == len(expected), (
            f"{machine}: MES has {len(parts)} parts in the run, the simulator made "
            f"{len(expected)}; missing {missing} extra {extra} (window {t_a}..{t_b})"
        )
        assert sorted(by_ts) == sorted(p.end_ns for p in expected)
        scrap_truth = sum(not p.good for p in expected)
        assert sum(not p["good"] for p in parts) == scrap_truth, f"{machine}: scrap count"
        for t in expected:
            got = by_ts[t.end_ns]
            if t.part_count == 1:
                # the machine's very first part: its energy window opened before the gateway
                # could see the counter, so the gateway says "unknown" rather than guess
                assert got["energy_wh"] is None
                continue
            assert got["energy_wh"] is not None, f"{machine}: part {t} has no energy"
            assert got["energy_wh"] == pytest.approx(t.energy_wh, rel=0.01), (
                f"{machine}: part {t.part_count} energy {got['energy_wh']} Wh, truth {t.energy_wh}"
            )
            assert got["cycle_time_s"] == pytest.approx(t.cycle_time_s, abs=0.002)
        run = (await shop.api.get(f"/runs/{run_id}", auth=OPERATOR)).json()
        assert run["machine_id"] == machine and run["status"] == "done"
    # the batch figures the manager reads: parts, scrap and kWh of SO-1001's batch
    orders = (await shop.api.get("/orders", auth=MANAGER)).json()["items"]
    so1001 = next(o for o in orders if o["code"] == "SO-1001")
    batch_id = so1001["batches"][0]["id"]
    energy = (await shop.api.get(f"/batches/{batch_id}/energy", auth=MANAGER)).json()
    measured = [
        p
        for m in ("laser-1", "mill-1")
        for p in _truth_parts(truth, m, t_a, t_b)
        if p.part_count != 1
    ]
    assert energy["energy_wh"] == pytest.approx(sum(p.energy_wh for p in measured), rel=0.01)
    assert energy["parts_with_energy"] == len(measured)
    truth_n = sum(len(_truth_parts(truth, m, t_a, t_b)) for m in ("laser-1", "mill-1"))
    assert energy["parts_total"] == truth_n
    progress = (await shop.api.get(f"/orders/{so1001['id']}/progress", auth=MANAGER)).json()
    mill = _truth_parts(truth, "mill-1", t_a, t_b)
    assert progress["good"] == sum(p.good for p in mill)  # finished = good out of the last op
    assert progress["scrap"] == sum(
        not p.good for m in ("laser-1", "mill-1") for p in _truth_parts(truth, m, t_a, t_b)
    )


def _counter_energy(truth: GroundTruth, machine: str, t_a: int, t_b: int) -> float:
    """By hand from what the machine published: its energy counter over [t_a, t_b], resets
    bridged (a lower reading means the counter restarted from zero), linear between readings
    (power only changes where the simulator publishes)."""
    points: list[tuple[int, float]] = []
    offset, last = 0.0, None
    for p in sorted(truth.published_of(machine, "energy_active"), key=lambda p: p.ts_ns):
        if last is not None and p.value < last:
            offset += last
        last = p.value
        points.append((p.ts_ns, offset + p.value))

    def at(ts: int) -> float:
        for (t0, e0), (t1, e1) in itertools.pairwise(points):
            if t0 <= ts <= t1:
                return e0 if t1 == t0 else e0 + (e1 - e0) * (ts - t0) / (t1 - t0)
        raise AssertionError(f"{machine}: no published energy around {ts}")

    return at(t_b) - at(t_a)


async def _check_machine_energy(shop: Shop, truth: GroundTruth, t_a: int, t_b: int) -> None:
    """The batch's whole energy (parts + idle, setup, fault…) against the machines' counters."""
    orders = (await shop.api.get("/orders", auth=MANAGER)).json()["items"]
    so1001 = next(o for o in orders if o["code"] == "SO-1001")
    batch_id = so1001["batches"][0]["id"]
    energy = (await shop.api.get(f"/batches/{batch_id}/energy", auth=MANAGER)).json()
    machine = energy["machine_energy"]
    expected = {m: _counter_energy(truth, m, t_a, t_b) for m in ("laser-1", "mill-1")}
    assert machine["known"] and machine["unknown_s"] == 0.0, (
        f"state energy unknown for {machine['unknown_s']} s of the runs: {machine['by_state']}"
    )
    assert machine["energy_wh"] == pytest.approx(sum(expected.values()), rel=0.01), (
        f"batch energy by state {machine['energy_wh']} Wh, machines' counters {expected}"
    )
    by_state = {r["state"]: r for r in machine["by_state"]}
    assert sum(r["energy_wh"] for r in by_state.values()) == pytest.approx(machine["energy_wh"])
    assert machine["in_parts_wh"] + machine["outside_parts_wh"] == pytest.approx(
        machine["energy_wh"]
    )
    # idle/setup shown on their own, not hidden in the parts (both machines set up and idle)
    assert energy["idle_setup_energy_kwh"] == pytest.approx(machine["idle_setup_kwh"])
    assert machine["idle_setup_wh"] > 0 and by_state["running"]["energy_wh"] > 0
    # the time by state adds up to the two runs' time
    assert sum(r["seconds"] for r in by_state.values()) == pytest.approx(2 * (t_b - t_a) / S)
    order = (await shop.api.get(f"/orders/{so1001['id']}/energy", auth=MANAGER)).json()
    assert order["machine_energy"]["energy_wh"] == pytest.approx(machine["energy_wh"])


async def _check_oee(shop: Shop, truth: GroundTruth, t_a: int, t_b: int) -> None:
    for machine, ideal_ct in (("laser-1", 20.0), ("mill-1", 45.0)):
        r = await shop.api.get(
            "/reports/oee",
            params={
                "machine_id": machine,
                "start": from_ns(t_a).isoformat(),
                "end": from_ns(t_b).isoformat(),
            },
            auth=MANAGER,
        )
        assert r.status_code == 200, r.text
        oee = r.json()
        planned = (t_b - t_a) / S
        running = _running_seconds(truth, machine, t_a, t_b)
        parts = _truth_parts(truth, machine, t_a, t_b)
        good = sum(p.good for p in parts)
        assert oee["planned_time_s"] == pytest.approx(planned, abs=1e-3)
        assert oee["running_time_s"] == pytest.approx(running, abs=1e-3)
        assert oee["availability"] == pytest.approx(running / planned, rel=1e-6)
        assert oee["performance"] == pytest.approx(ideal_ct * len(parts) / running, rel=1e-6)
        assert oee["quality"] == pytest.approx(good / len(parts), rel=1e-9)
        expected = (running / planned) * (ideal_ct * len(parts) / running) * (good / len(parts))
        assert oee["oee"] == pytest.approx(expected, rel=1e-6)


async def _check_genealogy(shop: Shop, run_ids: dict[str, int]) -> None:
    api = shop.api
    forward = (await api.get("/material-lots/ML-S235-2405/trace", auth=MANAGER)).json()
    (batch,) = forward["batches"]
    assert batch["lot_number"] == "SO-1001-01" and batch["order"] == "SO-1001"
    assert batch["customer"] == "Alpine Bikes GmbH" and batch["quantity_consumed"] == 42.0
    laser_parts = await _get_all(api, "/parts", run_id=run_ids["laser-1"])
    mill_parts = await _get_all(api, "/parts", run_id=run_ids["mill-1"])
    # the recall question: every part the lot reached, through its batch
    assert {p["id"] for p in batch["parts"]} == {p["id"] for p in laser_parts + mill_parts}
    assert forward["orders"] == ["SO-1001"]
    assert forward["remaining_quantity"] == pytest.approx(800.0 - 42.0)
    back = (await api.get(f"/parts/{mill_parts[0]['id']}/trace", auth=MANAGER)).json()
    assert back["part"]["machine_id"] == "mill-1"
    assert back["part"]["energy_wh"] == mill_parts[0]["energy_wh"]
    assert back["part"]["run"]["operators"] == ["operator"]
    record = back["batch"]
    assert [m["material_lot"] for m in record["materials"]] == ["ML-S235-2405"]
    assert {r["machine_id"] for r in record["runs"]} == {"laser-1", "mill-1"}
    assert record["telemetry"]["tag"] == {"site": "demo", "batch": "SO-1001-01"}


def _check_tagged_history(data_dir: Path, t_a: int, t_b: int) -> None:
    """Samples of a machine in its run carry the batch context (queryable by batch)."""
    with sqlite3.connect(data_dir / "history.sqlite") as conn:
        rows = conn.execute(
            "SELECT tags FROM telemetry WHERE machine = 'mill-1' AND signal = 'power_active' "
            "AND ts_ns >= ? AND ts_ns < ?",
            (t_a + 5 * S * int(SPEED), t_b),
        ).fetchall()
    assert rows, "no mill power samples stored in the run"
    tagged = [json.loads(t) for (t,) in rows if t]
    assert len(tagged) >= 0.9 * len(rows)
    assert all(t["batch"] == "SO-1001-01" and t["order"] == "SO-1001" for t in tagged)
