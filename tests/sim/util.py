"""Small helpers shared by the simulator tests."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from microfactory.sim.truth import GroundTruth, PartRecord, StateRecord
from microfactory.sim.workshop import Workshop, WorkshopSettings

T0 = 1_780_000_000_000_000_000  # a whole-millisecond UTC origin, so runs can be compared
S = 1_000_000_000


def settings(truth_dir: Path | None, **overrides: Any) -> WorkshopSettings:
    """A fast workshop on free OPC UA ports, without MQTT unless a broker URL is given."""
    base: dict[str, Any] = {
        "seed": 7,
        "speed": 3600.0,
        "mqtt_url": None,
        "opcua_ports": {"mill-1": 0, "laser-1": 0},
        "truth_dir": truth_dir,
        "start_ns": T0,
        "tick_s": 0.05,
        "power_loss_probability": 0.0,
    }
    base.update(overrides)
    return WorkshopSettings(**base)


async def run_for(workshop: Workshop, wall_s: float, *, pause_s: float = 0.0) -> None:
    """Start the servers, optionally wait paused, run the clock ``wall_s``, stop."""
    await workshop.start(paused=True)
    try:
        await asyncio.sleep(pause_s)
        await workshop.resume()
        await asyncio.sleep(wall_s)
    finally:
        await workshop.stop()


def parts_until(truth: GroundTruth, end_ns: int) -> list[PartRecord]:
    return [p for p in truth.parts if p.end_ns <= end_ns]


def states_until(truth: GroundTruth, end_ns: int) -> list[StateRecord]:
    return [s for s in truth.states if s.ts_ns <= end_ns]


def by_machine_sorted(parts: list[PartRecord]) -> list[PartRecord]:
    """Parts in a canonical order (the file order interleaves machines by tick)."""
    return sorted(parts, key=lambda p: (p.machine, p.part_count))
