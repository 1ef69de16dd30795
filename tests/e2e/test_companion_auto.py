"""`companion: auto` alone gives the MES what OEE needs: no hand mapping of state or parts.

The simulated mill's adapter lists only its power and energy nodes; its state, part and good
counters come from the OPC 40001-1 / 40501-1 objects the gateway finds at connect. What the
gateway stored is fed to its own event deriver (what the MES link publishes) and compared
with the simulator's ground truth: every part, in order, with its verdict wherever the job
counters allow one, and the states the machine went through.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from microfactory.contract import PartCompleted, StateChanged
from microfactory.gateway.events import EventDeriver
from microfactory.gateway.sample import Sample
from microfactory.sim.truth import load_truth
from tests.helpers.servers import Mosquitto
from tests.helpers.workshop import workshop_through_gateway

pytestmark = pytest.mark.e2e

SPEED = 60.0
RUN_WALL_S = 20.0
# MachineryItemState cannot tell setup from idle (both are NotExecuting)
ITEM_STATE = {"running": "running", "idle": "idle", "setup": "idle", "fault": "fault", "off": "off"}


def _stored(history: Path, machine: str) -> list[Sample]:
    with sqlite3.connect(history) as db:
        rows = db.execute(
            "SELECT ts_ns, signal, value, text, unit, quality, tags FROM telemetry "
            "WHERE machine = ? ORDER BY ts_ns, signal",
            (machine,),
        ).fetchall()
    return [
        Sample(
            machine,
            signal,
            text if text is not None else value,
            unit,
            ts,
            quality,
            json.loads(tags) if tags else {},
        )
        for ts, signal, value, text, unit, quality, tags in rows
    ]


async def test_companion_auto_maps_state_and_parts_of_the_mill(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["local_history"]["enabled"] = True
        mill = next(a for a in data["adapters"] if a.get("machine") == "mill-1")
        mill["companion"] = "auto"
        mill["nodes"] = [
            n for n in mill["nodes"] if n["signal"] in {"power_active", "energy_active"}
        ]

    async with workshop_through_gateway(
        tmp_path,
        mosquitto.url,
        seed=5,
        speed=SPEED,
        data_dir=tmp_path / "gateway",
        site_name="companion",
        configure=configure,
    ) as shop:
        await asyncio.sleep(RUN_WALL_S)
        await shop.finish()
    truth = load_truth(shop.truth_dir)
    stored = _stored(tmp_path / "gateway" / "history.sqlite", "mill-1")
    signals = {s.signal for s in stored}
    assert {"state", "part_count", "good_count", "program"} <= signals, signals

    events = EventDeriver("companion").feed(stored)
    parts = [e for e in events if isinstance(e, PartCompleted)]
    true_parts = truth.parts_of("mill-1")
    assert len(true_parts) >= 5, "the run is long enough to make parts"
    assert [p.part_count for p in parts] == [p.part_count for p in true_parts]
    judged = [
        (p.good, t.good) for p, t in zip(parts, true_parts, strict=True) if p.good is not None
    ]
    # a job's counters restart with each batch: the first part of a job may go unjudged
    assert len(judged) >= len(parts) - 2 * len({t.program for t in true_parts}) - 1
    assert all(ours == theirs for ours, theirs in judged), judged

    states = [e.state for e in events if isinstance(e, StateChanged)]
    true_states = [ITEM_STATE[s.state] for s in truth.states_of("mill-1")]
    collapsed = [s for i, s in enumerate(true_states) if i == 0 or s != true_states[i - 1]]
    assert states and set(states) <= set(ITEM_STATE.values())
    assert states == collapsed[-len(states) :], (states, collapsed)
