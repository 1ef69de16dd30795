"""What a shop-floor tile shows for each machine, read from what the MES knows.

The MES gets no raw telemetry: the gateway sends it machine events (state changes, and each
part with its own energy in Wh and its cycle time). So the tile's power is the *mean power of
the machine's last part cycle* (energy of the part / its cycle time), labelled as such in the
UI; full-resolution power lives in InfluxDB under the batch tag.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from microfactory.mes.models import Downtime, Machine, OperationRun, Part, RunStatus, Scrap

ACTIVE = (RunStatus.running, RunStatus.paused)


@dataclass(frozen=True, slots=True)
class RunTile:
    run_id: int
    status: str
    batch_id: int
    lot_number: str
    batch_quantity: int
    order_id: int
    order: str
    product: str
    operation_id: int
    operation: str
    operation_seq: int
    operator: str | None
    started_at: str
    parts: int
    scrap: int
    good: int
    parts_with_energy: int
    energy_wh: float
    wh_per_part: float | None


@dataclass(frozen=True, slots=True)
class MachineTile:
    id: str
    name: str | None
    kind: str
    state: str | None
    state_since: str | None
    nominal_power_w: float | None
    ideal_cycle_time_s: float | None
    run: RunTile | None
    last_part_at: str | None
    last_cycle_power_w: float | None
    last_cycle_time_s: float | None
    unassigned_downtime: int


def mean_power_w(energy_wh: float | None, cycle_time_s: float | None) -> float | None:
    """Mean power over one part cycle, W; None when the cycle is unknown or empty."""
    if energy_wh is None or cycle_time_s is None or cycle_time_s <= 0:
        return None
    return energy_wh * 3600.0 / cycle_time_s


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def _run_tile(session: Session, run: OperationRun) -> RunTile:
    total, energy, with_energy = session.execute(
        select(
            func.coalesce(func.sum(Part.quantity), 0),
            func.coalesce(func.sum(Part.energy_wh), 0.0),
            func.count(Part.energy_wh),
        ).where(Part.run_id == run.id)
    ).one()
    scrap = session.scalar(
        select(func.coalesce(func.sum(Scrap.quantity), 0)).where(Scrap.run_id == run.id)
    )
    batch = run.batch
    total, scrap_n = int(total or 0), int(scrap or 0)
    energy_wh = float(energy or 0.0)
    return RunTile(
        run_id=run.id,
        status=run.status,
        batch_id=batch.id,
        lot_number=batch.lot_number,
        batch_quantity=batch.quantity,
        order_id=batch.order_id,
        order=batch.order.code,
        product=batch.order.product.code,
        operation_id=run.operation_id,
        operation=run.operation.name,
        operation_seq=run.operation.seq,
        operator=run.segments[-1].operator if run.segments else run.operator,
        started_at=run.started_at.isoformat(),
        parts=total,
        scrap=scrap_n,
        good=max(0, total - scrap_n),
        parts_with_energy=int(with_energy or 0),
        energy_wh=round(energy_wh, 3),
        wh_per_part=round(energy_wh / with_energy, 3) if with_energy else None,
    )


def machine_tiles(session: Session) -> list[dict[str, Any]]:
    """One tile per machine, in machine id order; JSON-ready."""
    machines = session.scalars(select(Machine).order_by(Machine.id)).all()
    runs: dict[str, OperationRun] = {}
    for run in session.scalars(
        select(OperationRun).where(OperationRun.status.in_(ACTIVE)).order_by(OperationRun.id)
    ):
        # a running run wins over a paused one; the newest wins among equals
        current = runs.get(run.machine_id)
        if current is None or run.status == RunStatus.running or current.status != "running":
            runs[run.machine_id] = run
    unassigned = dict(
        session.execute(
            select(Downtime.machine_id, func.count())
            .where(Downtime.reason_code == "unassigned")
            .group_by(Downtime.machine_id)
        ).all()
    )
    tiles = []
    for machine in machines:
        last = session.scalars(
            select(Part)
            .where(Part.machine_id == machine.id, Part.source == "machine")
            .order_by(Part.completed_at.desc())
            .limit(1)
        ).first()
        active = runs.get(machine.id)
        power = mean_power_w(last.energy_wh, last.cycle_time_s) if last else None
        tile = MachineTile(
            id=machine.id,
            name=machine.name,
            kind=machine.kind,
            state=machine.state,
            state_since=_iso(machine.state_since),
            nominal_power_w=machine.nominal_power_w,
            ideal_cycle_time_s=machine.ideal_cycle_time_s,
            run=_run_tile(session, active) if active else None,
            last_part_at=_iso(last.completed_at) if last else None,
            last_cycle_power_w=round(power, 1) if power is not None else None,
            last_cycle_time_s=last.cycle_time_s if last else None,
            unassigned_downtime=int(unassigned.get(machine.id, 0)),
        )
        tiles.append(asdict(tile))
    return tiles
