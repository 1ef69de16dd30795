"""Load rows for the pure calculations in :mod:`services.mes.calc` and shape their results."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.mes.calc import energy as energy_calc
from services.mes.calc.intervals import Interval
from services.mes.calc.oee import PartSample, StateChange, compute_oee
from services.mes.calc.pareto import downtime_pareto
from services.mes.calc.progress import OperationCount, progress
from services.mes.calc.shifts import shift_windows
from services.mes.errors import Invalid
from services.mes.models import (
    Batch,
    Downtime,
    Machine,
    MachineStateRecord,
    Operation,
    OperationRun,
    Order,
    Part,
    RunSegment,
    Scrap,
)
from services.mes.settings import MesSettings
from services.mes.timeutil import now, to_ns


def batch_progress(session: Session, batch: Batch) -> dict[str, Any]:
    ops = batch.order.product.operations
    counts = []
    for op in ops:
        run_ids = [r.id for r in batch.runs if r.operation_id == op.id]
        total = scrap = 0
        if run_ids:
            total = sum(
                session.scalars(select(Part.quantity).where(Part.run_id.in_(run_ids))).all()
            )
            scrap = sum(
                session.scalars(select(Scrap.quantity).where(Scrap.run_id.in_(run_ids))).all()
            )
        counts.append(OperationCount(op.seq, op.name, total, scrap))
    result = progress(batch.quantity, counts)
    out = asdict(result)
    out["operations"] = [{**asdict(o), "good": o.good} for o in result.operations]
    return out


def order_progress(session: Session, order: Order) -> dict[str, Any]:
    batches = [batch_progress(session, b) | {"batch_id": b.id} for b in order.batches]
    good = sum(b["good"] for b in batches)
    scrap = sum(b["scrap"] for b in batches)
    return {
        "quantity": order.quantity,
        "good": good,
        "scrap": scrap,
        "remaining": max(0, order.quantity - good),
        "percent": min(100.0, 100.0 * good / order.quantity) if order.quantity else 0.0,
        "batches": batches,
    }


def _part_energy(parts: list[Part]) -> list[energy_calc.PartEnergy]:
    return [energy_calc.PartEnergy(p.completed_at, p.quantity, p.good, p.energy_wh) for p in parts]


def energy_of_parts(parts: list[Part], settings: MesSettings) -> dict[str, Any]:
    """Energy summary; energy per good part uses the parts of the *last* operation as 'good'."""
    summary = energy_calc.summarise(_part_energy(parts), settings.co2e_g_per_kwh)
    return asdict(summary) | {"co2e_g_per_kwh": settings.co2e_g_per_kwh}


def batch_energy(session: Session, batch: Batch, settings: MesSettings) -> dict[str, Any]:
    parts = list(session.scalars(select(Part).where(Part.batch_id == batch.id)).all())
    by_op: list[dict[str, Any]] = []
    for op in batch.order.product.operations:
        op_parts = [p for p in parts if p.run is not None and p.run.operation_id == op.id]
        by_op.append({"seq": op.seq, "operation": op.name, **energy_of_parts(op_parts, settings)})
    finished = by_op[-1]["parts_good"] if by_op else 0
    total = energy_of_parts(parts, settings)
    total["wh_per_finished_part"] = total["energy_wh"] / finished if finished else None
    return {"batch_id": batch.id, "lot_number": batch.lot_number, **total, "operations": by_op}


def order_energy(session: Session, order: Order, settings: MesSettings) -> dict[str, Any]:
    batches = [batch_energy(session, b, settings) for b in order.batches]
    parts = list(
        session.scalars(select(Part).where(Part.batch_id.in_([b.id for b in order.batches]))).all()
    )
    total = energy_of_parts(parts, settings)
    finished = sum(b["operations"][-1]["parts_good"] for b in batches if b["operations"])
    total["wh_per_finished_part"] = total["energy_wh"] / finished if finished else None
    return {"order_id": order.id, "code": order.code, **total, "batches": batches}


def product_energy(
    session: Session,
    product_id: int,
    start: datetime,
    end: datetime,
    bucket: energy_calc.Bucket,
    settings: MesSettings,
) -> list[dict[str, Any]]:
    parts = session.scalars(
        select(Part)
        .join(Batch, Part.batch_id == Batch.id)
        .join(Order, Batch.order_id == Order.id)
        .where(Order.product_id == product_id, Part.completed_at >= start, Part.completed_at < end)
    ).all()
    rows = energy_calc.by_bucket(
        _part_energy(list(parts)), bucket, ZoneInfo(settings.timezone), settings.co2e_g_per_kwh
    )
    return [{"bucket_start": k.isoformat(), **asdict(v)} for k, v in rows]


def _check_window(start: datetime, end: datetime) -> None:
    if end <= start:
        raise Invalid("end", "must be after start")
    if (end - start).days > 400:
        raise Invalid("end", "window longer than 400 days")


def machine_oee(
    session: Session, machine: Machine, start: datetime, end: datetime
) -> dict[str, Any]:
    """OEE of one machine in a window, with everything that went into it."""
    _check_window(start, end)
    window = Interval(to_ns(start), to_ns(end))
    current = now()
    segments = session.scalars(
        select(RunSegment).where(
            RunSegment.machine_id == machine.id,
            RunSegment.started_at < end,
            (RunSegment.ended_at.is_(None)) | (RunSegment.ended_at > start),
        )
    ).all()
    planned = [
        Interval(to_ns(s.started_at), to_ns(min(s.ended_at or current, end))) for s in segments
    ]
    before = session.scalars(
        select(MachineStateRecord)
        .where(
            MachineStateRecord.machine_id == machine.id, MachineStateRecord.ts_ns < window.start_ns
        )
        .order_by(MachineStateRecord.ts_ns.desc())
        .limit(1)
    ).all()
    inside = session.scalars(
        select(MachineStateRecord).where(
            MachineStateRecord.machine_id == machine.id,
            MachineStateRecord.ts_ns >= window.start_ns,
            MachineStateRecord.ts_ns < window.end_ns,
        )
    ).all()
    changes = [StateChange(r.ts_ns, r.state) for r in [*before, *inside]]
    rows = session.execute(
        select(Part, Operation.ideal_cycle_time_s)
        .outerjoin(OperationRun, Part.run_id == OperationRun.id)
        .outerjoin(Operation, OperationRun.operation_id == Operation.id)
        .where(Part.machine_id == machine.id, Part.completed_at >= start, Part.completed_at < end)
    ).all()
    parts = [PartSample(to_ns(p.completed_at), p.good, p.quantity, ct) for p, ct in rows]
    result = compute_oee(window, planned, changes, parts, machine.ideal_cycle_time_s)
    out = asdict(result)
    out["window"] = {"start": start.isoformat(), "end": end.isoformat()}
    return {"machine_id": machine.id, **out}


def machine_oee_by_shift(
    session: Session, machine: Machine, start: datetime, end: datetime, settings: MesSettings
) -> list[dict[str, Any]]:
    _check_window(start, end)
    shifts = [(s.name, s.start, s.end) for s in settings.shifts]
    windows = shift_windows(start, end, shifts, ZoneInfo(settings.timezone))
    return [
        {"shift": w.name, "day": w.day.isoformat()} | machine_oee(session, machine, w.start, w.end)
        for w in windows
    ]


def pareto(
    session: Session, start: datetime, end: datetime, machine_id: str | None
) -> list[dict[str, Any]]:
    _check_window(start, end)
    query = select(Downtime).where(
        Downtime.started_at < end, (Downtime.ended_at.is_(None)) | (Downtime.ended_at > start)
    )
    if machine_id:
        query = query.where(Downtime.machine_id == machine_id)
    current = now()
    items = []
    for d in session.scalars(query).all():
        lo = max(d.started_at, start)
        hi = min(d.ended_at or current, end)
        items.append((d.reason_code, max(0.0, (hi - lo).total_seconds())))
    return [asdict(r) for r in downtime_pareto(items)]
