"""Load rows for the pure calculations in :mod:`microfactory.mes.calc` and shape their results."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Iterable
from dataclasses import asdict
from datetime import datetime, timedelta, tzinfo
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from microfactory.mes.calc import energy as energy_calc
from microfactory.mes.calc import state_energy
from microfactory.mes.calc.intervals import Interval
from microfactory.mes.calc.oee import PartSample, StateChange, compute_oee
from microfactory.mes.calc.pareto import downtime_pareto
from microfactory.mes.calc.progress import OperationCount, progress
from microfactory.mes.calc.shifts import shift_windows
from microfactory.mes.errors import Invalid
from microfactory.mes.ingest import MAX_EVENT_WH, plausible
from microfactory.mes.models import (
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
from microfactory.mes.settings import MesSettings
from microfactory.mes.timeutil import from_ns, now, to_ns


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


K = TypeVar("K", bound=Hashable)


def _part_energy(parts: list[Part]) -> list[energy_calc.PartEnergy]:
    # plausible(): rows stored before ingestion checked values must not overflow the totals
    return [
        energy_calc.PartEnergy(
            p.completed_at, p.quantity, p.good, plausible(p.energy_wh, MAX_EVENT_WH)
        )
        for p in parts
    ]


def energy_of_parts(parts: list[Part], settings: MesSettings) -> dict[str, Any]:
    """Energy summary; energy per good part uses the parts of the *last* operation as 'good'."""
    summary = energy_calc.summarise(_part_energy(parts), settings.co2e_g_per_kwh)
    return asdict(summary) | {"co2e_g_per_kwh": settings.co2e_g_per_kwh}


# ----------------------------------------------------------------- energy by machine state
def _state_changes(
    session: Session, machine_id: str, start_ns: int, end_ns: int
) -> list[state_energy.StateChange]:
    """The machine's state changes whose intervals can reach into [start_ns, end_ns)."""
    cols = (
        MachineStateRecord.ts_ns,
        MachineStateRecord.state,
        MachineStateRecord.previous,
        MachineStateRecord.previous_since_ns,
        MachineStateRecord.previous_energy_wh,
        MachineStateRecord.previous_energy_from_ns,
    )
    mine = MachineStateRecord.machine_id == machine_id
    before = session.execute(
        select(*cols)
        .where(mine, MachineStateRecord.ts_ns <= start_ns)
        .order_by(MachineStateRecord.ts_ns.desc())
        .limit(1)
    ).all()
    inside = session.execute(
        select(*cols)
        .where(mine, MachineStateRecord.ts_ns > start_ns, MachineStateRecord.ts_ns <= end_ns)
        .order_by(MachineStateRecord.ts_ns)
    ).all()
    after = session.execute(
        select(*cols)
        .where(mine, MachineStateRecord.ts_ns > end_ns)
        .order_by(MachineStateRecord.ts_ns)
        .limit(1)
    ).all()
    return [
        state_energy.StateChange(*row)._replace(
            previous_energy_wh=plausible(row.previous_energy_wh, MAX_EVENT_WH)
        )
        for row in [*before, *inside, *after]
    ]


def _part_windows(
    session: Session, machine_id: str, start_ns: int, end_ns: int, run_ids: set[int]
) -> list[Interval]:
    """Windows of the measured parts of ``run_ids`` on a machine (see state_energy)."""
    start, end = from_ns(start_ns), from_ns(end_ns)
    machine_parts = (Part.machine_id == machine_id, Part.source == "machine")
    before = session.scalars(
        select(Part.completed_at)
        .where(*machine_parts, Part.completed_at < start)
        .order_by(Part.completed_at.desc())
        .limit(1)
    ).all()
    rows = session.execute(
        select(Part.completed_at, Part.run_id, Part.energy_wh)
        .where(*machine_parts, Part.completed_at >= start, Part.completed_at <= end)
        .order_by(Part.completed_at)
    ).all()
    completions = [(to_ns(ts), False) for ts in before] + [
        (to_ns(ts), run_id in run_ids and plausible(wh, MAX_EVENT_WH) is not None)
        for ts, run_id, wh in rows
    ]
    return state_energy.part_windows(completions)


def _breakdowns(
    session: Session, windows: Iterable[tuple[str, K, Interval]], run_ids: set[int]
) -> dict[K, state_energy.Breakdown]:
    """Energy by state per key, from (machine, key, window) triples; one pass per machine."""
    per_machine: dict[str, list[tuple[K, Interval]]] = defaultdict(list)
    for machine_id, key, window in windows:
        if window.end_ns > window.start_ns:
            per_machine[machine_id].append((key, window))
    out: dict[K, state_energy.Breakdown] = defaultdict(state_energy.Breakdown)
    for machine_id, keyed in per_machine.items():
        lo = min(w.start_ns for _, w in keyed)
        hi = max(w.end_ns for _, w in keyed)
        spans = state_energy.spans_from_changes(_state_changes(session, machine_id, lo, hi), hi)
        parts = _part_windows(session, machine_id, lo, hi, run_ids)
        for key, result in state_energy.attribute(keyed, spans, parts).items():
            out[key].add(result)
    return dict(out)


def _segment_windows(runs: Iterable[OperationRun]) -> list[tuple[str, int, Interval]]:
    current = now()
    return [
        (seg.machine_id, run.id, Interval(to_ns(seg.started_at), to_ns(seg.ended_at or current)))
        for run in runs
        for seg in run.segments
    ]


def _kwh_co2e(wh: float, settings: MesSettings) -> dict[str, float]:
    return {
        "kwh": wh / 1000.0,
        "co2e_kg": energy_calc.co2e_kg(wh / 1000.0, settings.co2e_g_per_kwh),
    }


def machine_energy(breakdown: state_energy.Breakdown, settings: MesSettings) -> dict[str, Any]:
    """The machines' counter energy in the run windows, by state, and what no part carried."""
    rows = []
    for state in sorted(breakdown.states, key=state_energy.state_order):
        t = breakdown.states[state]
        total, outside = _kwh_co2e(t.energy_wh, settings), _kwh_co2e(t.outside_parts_wh, settings)
        rows.append(
            {
                "state": state,
                "seconds": t.seconds,
                "unknown_s": t.unknown_s,
                "energy_wh": t.energy_wh,
                "energy_kwh": total["kwh"],
                "co2e_kg": total["co2e_kg"],
                "outside_parts_wh": t.outside_parts_wh,
                "outside_parts_kwh": outside["kwh"],
                "outside_parts_co2e_kg": outside["co2e_kg"],
            }
        )
    energy_wh, outside_wh = breakdown.energy_wh, breakdown.outside_parts_wh
    idle_setup_wh = sum(t.energy_wh for s, t in breakdown.states.items() if s != "running")
    total, outside = _kwh_co2e(energy_wh, settings), _kwh_co2e(outside_wh, settings)
    idle_setup = _kwh_co2e(idle_setup_wh, settings)
    return {
        "known": breakdown.known,
        "energy_wh": energy_wh,
        "energy_kwh": total["kwh"],
        "co2e_kg": total["co2e_kg"],
        "in_parts_wh": energy_wh - outside_wh,
        "outside_parts_wh": outside_wh,
        "outside_parts_kwh": outside["kwh"],
        "outside_parts_co2e_kg": outside["co2e_kg"],
        "idle_setup_wh": idle_setup_wh,
        "idle_setup_kwh": idle_setup["kwh"],
        "idle_setup_co2e_kg": idle_setup["co2e_kg"],
        "unknown_s": breakdown.unknown_s,
        "by_state": rows,
    }


def _with_machine_energy(
    summary: dict[str, Any], breakdown: state_energy.Breakdown, settings: MesSettings
) -> dict[str, Any]:
    machine = machine_energy(breakdown, settings)
    summary["machine_energy"] = machine
    if machine["known"]:
        summary["idle_setup_energy_kwh"] = machine["idle_setup_kwh"]
        summary["note"] = energy_calc.MACHINE_ENERGY_NOTE
    return summary


def _sum(breakdowns: Iterable[state_energy.Breakdown]) -> state_energy.Breakdown:
    total = state_energy.Breakdown()
    for b in breakdowns:
        total.add(b)
    return total


def _batch_energy(
    session: Session, batch: Batch, settings: MesSettings
) -> tuple[dict[str, Any], state_energy.Breakdown]:
    parts = list(session.scalars(select(Part).where(Part.batch_id == batch.id)).all())
    per_run = _breakdowns(session, _segment_windows(batch.runs), {r.id for r in batch.runs})
    by_op: list[dict[str, Any]] = []
    for op in batch.order.product.operations:
        op_parts = [p for p in parts if p.run is not None and p.run.operation_id == op.id]
        op_states = _sum(
            per_run.get(r.id, state_energy.Breakdown())
            for r in batch.runs
            if r.operation_id == op.id
        )
        summary = energy_of_parts(op_parts, settings)
        by_op.append(
            {
                "seq": op.seq,
                "operation": op.name,
                **_with_machine_energy(summary, op_states, settings),
            }
        )
    finished = by_op[-1]["parts_good"] if by_op else 0
    states = _sum(per_run.values())
    total = _with_machine_energy(energy_of_parts(parts, settings), states, settings)
    total["wh_per_finished_part"] = total["energy_wh"] / finished if finished else None
    out = {"batch_id": batch.id, "lot_number": batch.lot_number, **total, "operations": by_op}
    return out, states


def batch_energy(session: Session, batch: Batch, settings: MesSettings) -> dict[str, Any]:
    return _batch_energy(session, batch, settings)[0]


def order_energy(session: Session, order: Order, settings: MesSettings) -> dict[str, Any]:
    results = [_batch_energy(session, b, settings) for b in order.batches]
    batches = [r for r, _ in results]
    parts = list(
        session.scalars(select(Part).where(Part.batch_id.in_([b.id for b in order.batches]))).all()
    )
    total = energy_of_parts(parts, settings)
    total = _with_machine_energy(total, _sum(b for _, b in results), settings)
    finished = sum(b["operations"][-1]["parts_good"] for b in batches if b["operations"])
    total["wh_per_finished_part"] = total["energy_wh"] / finished if finished else None
    return {"order_id": order.id, "code": order.code, **total, "batches": batches}


def _next_bucket(start: datetime, bucket: energy_calc.Bucket, tz: tzinfo) -> datetime:
    """Start of the bucket after the one starting at ``start`` (DST-proof: overshoot, floor)."""
    if bucket == "hour":
        return start + timedelta(hours=1)
    step = {"day": timedelta(hours=26), "week": timedelta(days=7, hours=2)}.get(
        bucket, timedelta(days=32)
    )
    return energy_calc.bucket_start(start + step, bucket, tz)


def _split_by_bucket(
    window: Interval, bucket: energy_calc.Bucket, tz: tzinfo
) -> list[tuple[datetime, Interval]]:
    pieces = []
    key = energy_calc.bucket_start(from_ns(window.start_ns), bucket, tz)
    while to_ns(key) < window.end_ns:
        nxt = _next_bucket(key, bucket, tz)
        piece = window.clip(Interval(to_ns(key), to_ns(nxt)))
        if piece is not None:
            pieces.append((key, piece))
        key = nxt
    return pieces


def product_energy(
    session: Session,
    product_id: int,
    start: datetime,
    end: datetime,
    bucket: energy_calc.Bucket,
    settings: MesSettings,
) -> list[dict[str, Any]]:
    tz = ZoneInfo(settings.timezone)
    parts = session.scalars(
        select(Part)
        .join(Batch, Part.batch_id == Batch.id)
        .join(Order, Batch.order_id == Order.id)
        .where(Order.product_id == product_id, Part.completed_at >= start, Part.completed_at < end)
    ).all()
    rows = dict(
        energy_calc.by_bucket(_part_energy(list(parts)), bucket, tz, settings.co2e_g_per_kwh)
    )
    segments = session.execute(
        select(RunSegment.machine_id, RunSegment.run_id, RunSegment.started_at, RunSegment.ended_at)
        .join(OperationRun, RunSegment.run_id == OperationRun.id)
        .join(Batch, OperationRun.batch_id == Batch.id)
        .join(Order, Batch.order_id == Order.id)
        .where(
            Order.product_id == product_id,
            RunSegment.started_at < end,
            (RunSegment.ended_at.is_(None)) | (RunSegment.ended_at > start),
        )
    ).all()
    current, span = now(), Interval(to_ns(start), to_ns(end))
    windows: list[tuple[str, datetime, Interval]] = []
    for machine_id, _run_id, seg_start, seg_end in segments:
        clipped = span.clip(Interval(to_ns(seg_start), to_ns(seg_end or current)))
        if clipped is not None:
            windows += [(machine_id, k, w) for k, w in _split_by_bucket(clipped, bucket, tz)]
    run_ids = {run_id for _, run_id, _, _ in segments}
    states = _breakdowns(session, windows, run_ids)
    empty = energy_calc.summarise([], settings.co2e_g_per_kwh)
    return [
        {"bucket_start": k.isoformat()}
        | _with_machine_energy(
            asdict(rows.get(k, empty)), states.get(k, state_energy.Breakdown()), settings
        )
        for k in sorted(set(rows) | set(states))
    ]


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
