"""Energy per part, batch, order and product, from the energy each part reported.

A part's ``energy_wh`` is the energy counter between the previous completion on its machine
and its own (the gateway's PartCompleted), so idle and setup between two parts is part of it.
The machines' energy over the run windows by state (idle, setup, fault… shown on their own)
comes from the state changes, in :mod:`microfactory.mes.calc.state_energy`; without them, idle and
setup energy is reported as unknown rather than guessed.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Literal

IDLE_SETUP_ENERGY_NOTE = (
    "no machine state energy is known for these runs (the gateway did not report it); "
    "energy_kwh covers part cycles only"
)
MACHINE_ENERGY_NOTE = (
    "energy_kwh sums the parts' own energy (previous completion to this one); "
    "machine_energy is the machines' counter energy over the runs, by state, with what no "
    "measured part carried (outside_parts); idle_setup_energy_kwh is its energy in every "
    "state but running"
)


@dataclass(frozen=True, slots=True)
class PartEnergy:
    completed_at: datetime
    quantity: int
    good: bool
    energy_wh: float | None


@dataclass(frozen=True, slots=True)
class EnergySummary:
    parts_total: int
    parts_good: int
    parts_with_energy: int
    energy_wh: float
    energy_kwh: float
    co2e_kg: float
    wh_per_part: float | None
    wh_per_good_part: float | None
    idle_setup_energy_kwh: float | None = None
    note: str = IDLE_SETUP_ENERGY_NOTE


def co2e_kg(energy_kwh: float, grid_g_per_kwh: float) -> float:
    return energy_kwh * grid_g_per_kwh / 1000.0


def summarise(parts: Iterable[PartEnergy], grid_g_per_kwh: float) -> EnergySummary:
    """Totals, with energy per good part carrying the energy lost to scrap."""
    total = good = with_energy = 0
    wh = 0.0
    measured_qty = 0
    for p in parts:
        total += p.quantity
        good += p.quantity if p.good else 0
        if p.energy_wh is not None:
            with_energy += p.quantity
            measured_qty += p.quantity
            wh += p.energy_wh
    kwh = wh / 1000.0
    return EnergySummary(
        parts_total=total,
        parts_good=good,
        parts_with_energy=with_energy,
        energy_wh=wh,
        energy_kwh=kwh,
        co2e_kg=co2e_kg(kwh, grid_g_per_kwh),
        wh_per_part=wh / measured_qty if measured_qty else None,
        wh_per_good_part=wh / good if good and with_energy else None,
    )


Bucket = Literal["hour", "day", "week", "month"]


def bucket_start(ts: datetime, bucket: Bucket, tz: tzinfo) -> datetime:
    local = ts.astimezone(tz)
    if bucket == "hour":
        return local.replace(minute=0, second=0, microsecond=0)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket == "day":
        return day
    if bucket == "week":
        return day - timedelta(days=day.weekday())
    return day.replace(day=1)


def by_bucket(
    parts: Sequence[PartEnergy], bucket: Bucket, tz: tzinfo, grid_g_per_kwh: float
) -> list[tuple[datetime, EnergySummary]]:
    """Energy summaries per time bucket (local time of the site), oldest first."""
    groups: dict[datetime, list[PartEnergy]] = defaultdict(list)
    for p in parts:
        groups[bucket_start(p.completed_at, bucket, tz)].append(p)
    return [(k, summarise(groups[k], grid_g_per_kwh)) for k in sorted(groups)]
