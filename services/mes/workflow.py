"""State changes of orders, batches and operation runs, with every rule that guards them.

Functions take a session and return the touched rows; they never commit, so the API can commit
once and then publish the machine contexts that changed.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from microfactory.mes.errors import Conflict, Invalid, InvalidTransition, NotFound
from microfactory.mes.ingest import segment_at
from microfactory.mes.models import (
    Batch,
    BatchStatus,
    Consumption,
    Downtime,
    Machine,
    MaterialLot,
    Operation,
    OperationRun,
    Order,
    OrderStatus,
    Part,
    ReasonCode,
    ReasonKind,
    RunSegment,
    RunStatus,
    Scrap,
)
from microfactory.mes.timeutil import now, to_ns

CLOCK_SKEW = timedelta(minutes=5)


def get_order(session: Session, order_id: int) -> Order:
    row = session.get(Order, order_id)
    if row is None:
        raise NotFound("order", order_id)
    return row


def get_batch(session: Session, batch_id: int) -> Batch:
    row = session.get(Batch, batch_id)
    if row is None:
        raise NotFound("batch", batch_id)
    return row


def get_run(session: Session, run_id: int) -> OperationRun:
    row = session.get(OperationRun, run_id)
    if row is None:
        raise NotFound("operation run", run_id)
    return row


def get_machine(session: Session, machine_id: str) -> Machine:
    row = session.get(Machine, machine_id)
    if row is None:
        raise NotFound("machine", machine_id)
    return row


def _when(at: datetime | None, field: str = "at") -> datetime:
    """The time of an action: now, or a back-dated time an operator typed in (never future)."""
    current = now()
    if at is None:
        return current
    if at.tzinfo is None:
        raise Invalid(field, "must carry a time zone")
    if at > current + CLOCK_SKEW:
        raise Invalid(field, "lies in the future")
    return at


def require_reason(session: Session, kind: ReasonKind, code: str, field: str) -> ReasonCode:
    row = session.scalars(
        select(ReasonCode).where(ReasonCode.kind == kind, ReasonCode.code == code)
    ).first()
    if row is None:
        raise Invalid(field, f"unknown {kind} reason code {code!r}")
    return row


# --------------------------------------------------------------------------- orders
def release_order(session: Session, order: Order) -> Order:
    """Release an order; an order without batches gets one batch for its whole quantity."""
    if order.status != OrderStatus.planned:
        raise InvalidTransition("order", order.id, order.status, "release")
    if not order.product.operations:
        raise Conflict(f"product {order.product.code!r} has no routing", field="product_id")
    if not order.batches:
        create_batch(session, order, order.quantity, None)
    order.status = OrderStatus.released
    order.released_at = now()
    return order


def cancel_order(session: Session, order: Order) -> Order:
    if order.status in (OrderStatus.done, OrderStatus.cancelled):
        raise InvalidTransition("order", order.id, order.status, "cancel")
    for batch in order.batches:
        if any(r.status == RunStatus.running for r in batch.runs):
            raise Conflict(
                f"batch {batch.lot_number!r} is running; pause or complete its runs first",
                current_state=order.status,
            )
    for batch in order.batches:
        if batch.status != BatchStatus.done:
            batch.status = BatchStatus.cancelled
    order.status = OrderStatus.cancelled
    return order


def complete_order(session: Session, order: Order) -> Order:
    if order.status not in (OrderStatus.released, OrderStatus.in_progress):
        raise InvalidTransition("order", order.id, order.status, "complete")
    open_batches = [b.lot_number for b in order.batches if b.status == BatchStatus.in_progress]
    if open_batches:
        raise Conflict(
            f"batches still in progress: {', '.join(open_batches)}", current_state=order.status
        )
    order.status = OrderStatus.done
    order.completed_at = now()
    return order


def create_batch(session: Session, order: Order, quantity: int, lot_number: str | None) -> Batch:
    if order.status in (OrderStatus.done, OrderStatus.cancelled):
        raise InvalidTransition("order", order.id, order.status, "add a batch to")
    planned = sum(b.quantity for b in order.batches if b.status != BatchStatus.cancelled)
    if planned + quantity > order.quantity:
        raise Conflict(
            f"order {order.code!r} has {order.quantity - planned} parts left to plan",
            field="quantity",
        )
    if lot_number is None:
        lot_number = f"{order.code}-{len(order.batches) + 1:02d}"
    if session.scalars(select(Batch.id).where(Batch.lot_number == lot_number)).first():
        raise Conflict(f"lot number {lot_number!r} already exists", field="lot_number")
    batch = Batch(order=order, quantity=quantity, lot_number=lot_number)
    session.add(batch)
    session.flush()
    return batch


# --------------------------------------------------------------------------- runs
def _machine_busy(session: Session, machine_id: str, except_run: int | None = None) -> None:
    busy = session.scalars(
        select(OperationRun).where(
            OperationRun.machine_id == machine_id,
            OperationRun.status == RunStatus.running,
            OperationRun.id != (except_run or -1),
        )
    ).first()
    if busy is not None:
        raise Conflict(
            f"machine {machine_id!r} is busy with run {busy.id} (batch {busy.batch.lot_number})",
            current_state="running",
            run_id=busy.id,
        )


def start_run(
    session: Session,
    batch: Batch,
    operation_id: int,
    machine_id: str,
    operator: str,
    at: datetime | None = None,
) -> OperationRun:
    """Put a batch on a machine for one routing operation."""
    when = _when(at)
    order = batch.order
    if batch.status not in (BatchStatus.planned, BatchStatus.in_progress):
        raise InvalidTransition("batch", batch.id, batch.status, "start")
    if order.status not in (OrderStatus.released, OrderStatus.in_progress):
        raise InvalidTransition("order", order.id, order.status, "start a batch of")
    operation = session.get(Operation, operation_id)
    if operation is None or operation.product_id != order.product_id:
        raise Invalid(
            "operation_id", f"{operation_id} is not in the routing of {order.product.code!r}"
        )
    machine = get_machine(session, machine_id)
    if machine.kind != operation.machine_kind:
        raise Invalid(
            "machine_id",
            f"{machine_id!r} is a {machine.kind}; operation {operation.name!r} needs a "
            f"{operation.machine_kind}",
        )
    _machine_busy(session, machine_id)
    run = OperationRun(
        batch=batch,
        operation=operation,
        machine_id=machine_id,
        operator=operator,
        status=RunStatus.running,
        started_at=when,
    )
    session.add(run)
    session.add(RunSegment(run=run, machine_id=machine_id, operator=operator, started_at=when))
    batch.status = BatchStatus.in_progress
    if order.status == OrderStatus.released:
        order.status = OrderStatus.in_progress
    session.flush()
    reattribute_parts(session, machine_id, when)
    return run


def _close_segment(session: Session, run: OperationRun, when: datetime) -> None:
    for seg in run.segments:
        if seg.ended_at is None:
            if when < seg.started_at:
                raise Invalid("at", f"is before the segment start {seg.started_at.isoformat()}")
            seg.ended_at = when
    session.flush()
    reattribute_parts(session, run.machine_id, when)


def reattribute_parts(session: Session, machine_id: str, since: datetime) -> int:
    """Give machine-reported parts from ``since`` on to the run segment that now covers them.

    Events are attributed when they arrive; a run started or ended with a back-dated time
    (an operator typing when it really happened) moves the parts on the wrong side of it.
    Returns how many parts moved.
    """
    moved = 0
    parts = session.scalars(
        select(Part).where(
            Part.machine_id == machine_id, Part.source == "machine", Part.completed_at >= since
        )
    ).all()
    for part in parts:
        segment = segment_at(session, machine_id, to_ns(part.completed_at))
        run_id = segment.run_id if segment else None
        if part.run_id == run_id:
            continue
        part.run_id = run_id
        part.batch_id = segment.run.batch_id if segment else None
        for scrap in session.scalars(select(Scrap).where(Scrap.part_id == part.id)):
            scrap.run_id = run_id
        moved += 1
    session.flush()
    return moved


def pause_run(session: Session, run: OperationRun, at: datetime | None = None) -> OperationRun:
    if run.status != RunStatus.running:
        raise InvalidTransition("operation run", run.id, run.status, "pause")
    _close_segment(session, run, _when(at))
    run.status = RunStatus.paused
    return run


def _not_before_pause(run: OperationRun, when: datetime) -> None:
    last_end = max((s.ended_at for s in run.segments if s.ended_at), default=None)
    if last_end is not None and when < last_end:
        raise Invalid("at", f"is before the pause at {last_end.isoformat()}")


def resume_run(
    session: Session, run: OperationRun, operator: str, at: datetime | None = None
) -> OperationRun:
    if run.status != RunStatus.paused:
        raise InvalidTransition("operation run", run.id, run.status, "resume")
    when = _when(at)
    _not_before_pause(run, when)
    _machine_busy(session, run.machine_id, run.id)
    run.status = RunStatus.running
    session.add(RunSegment(run=run, machine_id=run.machine_id, operator=operator, started_at=when))
    session.flush()
    reattribute_parts(session, run.machine_id, when)
    return run


def complete_run(session: Session, run: OperationRun, at: datetime | None = None) -> OperationRun:
    """Finish a run; the batch is done once its last routing operation has no open run."""
    if run.status == RunStatus.done:
        raise InvalidTransition("operation run", run.id, run.status, "complete")
    when = _when(at)
    if run.status == RunStatus.running:
        _close_segment(session, run, when)
    else:
        _not_before_pause(run, when)
    run.status = RunStatus.done
    run.ended_at = when
    batch = run.batch
    last_seq = max(op.seq for op in batch.order.product.operations)
    open_runs = [r for r in batch.runs if r.status != RunStatus.done]
    if run.operation.seq == last_seq and not open_runs:
        finish_batch(batch, when)
    return run


def finish_batch(batch: Batch, when: datetime) -> None:
    batch.status = BatchStatus.done
    batch.completed_at = when
    order = batch.order
    statuses = {b.status for b in order.batches}
    if statuses <= {BatchStatus.done, BatchStatus.cancelled} and BatchStatus.done in statuses:
        order.status = OrderStatus.done
        order.completed_at = when


def complete_batch(session: Session, batch: Batch) -> Batch:
    if batch.status != BatchStatus.in_progress:
        raise InvalidTransition("batch", batch.id, batch.status, "complete")
    running = [r.id for r in batch.runs if r.status != RunStatus.done]
    if running:
        raise Conflict(
            f"batch {batch.lot_number!r} has open runs {running}; complete them first",
            current_state=batch.status,
        )
    finish_batch(batch, now())
    return batch


def cancel_batch(session: Session, batch: Batch) -> Batch:
    if batch.status in (BatchStatus.done, BatchStatus.cancelled):
        raise InvalidTransition("batch", batch.id, batch.status, "cancel")
    if any(r.status == RunStatus.running for r in batch.runs):
        raise Conflict(f"batch {batch.lot_number!r} is running", current_state="running")
    for r in batch.runs:
        if r.status == RunStatus.paused:
            r.status = RunStatus.done
            r.ended_at = now()
    batch.status = BatchStatus.cancelled
    return batch


# --------------------------------------------------------------------------- parts and scrap
def run_counts(session: Session, run_id: int) -> tuple[int, int]:
    """(total parts, scrapped parts) of a run."""
    total = session.scalar(
        select(func.coalesce(func.sum(Part.quantity), 0)).where(Part.run_id == run_id)
    )
    scrap = session.scalar(
        select(func.coalesce(func.sum(Scrap.quantity), 0)).where(Scrap.run_id == run_id)
    )
    return int(total or 0), int(scrap or 0)


def record_parts(
    session: Session,
    run: OperationRun,
    quantity: int,
    serials: list[str] | None,
    at: datetime | None = None,
) -> list[Part]:
    """Parts counted by hand (a bench without a counter), one row per serial or one row."""
    if run.status == RunStatus.done:
        raise InvalidTransition("operation run", run.id, run.status, "count parts on")
    when = _when(at)
    if when < run.started_at:
        raise Invalid("at", f"is before the run's start {run.started_at.isoformat()}")
    if serials:
        if len(serials) != quantity:
            raise Invalid("serials", f"{len(serials)} serials for a quantity of {quantity}")
        if len(set(serials)) != len(serials):
            raise Invalid("serials", "contains duplicates")
        taken = session.scalars(select(Part.serial).where(Part.serial.in_(serials))).all()
        if taken:
            raise Conflict(f"serials already used: {', '.join(s for s in taken if s)}")
        parts = [
            Part(
                run_id=run.id,
                batch_id=run.batch_id,
                machine_id=run.machine_id,
                serial=s,
                quantity=1,
                completed_at=when,
                source="manual",
            )
            for s in serials
        ]
    else:
        parts = [
            Part(
                run_id=run.id,
                batch_id=run.batch_id,
                machine_id=run.machine_id,
                quantity=quantity,
                completed_at=when,
                source="manual",
            )
        ]
    session.add_all(parts)
    session.flush()
    return parts


def record_scrap(
    session: Session,
    run: OperationRun,
    quantity: int,
    reason_code: str,
    recorded_by: str,
    note: str | None = None,
    part_id: int | None = None,
) -> Scrap:
    """Scrap parts of a run; they must have been counted first (by the machine or by hand)."""
    require_reason(session, ReasonKind.scrap, reason_code, "reason_code")
    if part_id is not None:
        part = session.get(Part, part_id)
        if part is None or part.run_id != run.id:
            raise Invalid("part_id", f"part {part_id} is not a part of run {run.id}")
        if not part.good:
            raise Conflict(f"part {part_id} is already scrap", current_state="scrap")
        if quantity != part.quantity:
            raise Invalid("quantity", f"part {part_id} has quantity {part.quantity}")
        part.good = False
    else:
        total, scrapped = run_counts(session, run.id)
        if scrapped + quantity > total:
            raise Conflict(
                f"run {run.id} has {total - scrapped} good parts counted; cannot scrap {quantity}",
                field="quantity",
            )
    scrap = Scrap(
        run_id=run.id,
        part_id=part_id,
        machine_id=run.machine_id,
        quantity=quantity,
        reason_code=reason_code,
        note=note,
        recorded_by=recorded_by,
    )
    session.add(scrap)
    session.flush()
    return scrap


# --------------------------------------------------------------------------- downtime
def record_downtime(
    session: Session,
    machine_id: str,
    started_at: datetime,
    ended_at: datetime | None,
    reason_code: str,
    user: str,
    note: str | None,
) -> Downtime:
    get_machine(session, machine_id)
    require_reason(session, ReasonKind.downtime, reason_code, "reason_code")
    start = _when(started_at, "started_at")
    if ended_at is not None and _when(ended_at, "ended_at") <= start:
        raise Invalid("ended_at", "must be after started_at")
    row = Downtime(
        machine_id=machine_id,
        started_at=start,
        ended_at=ended_at,
        reason_code=reason_code,
        note=note,
        source="operator",
        assigned_by=user,
    )
    session.add(row)
    session.flush()
    return row


def assign_downtime_reason(
    session: Session, downtime: Downtime, reason_code: str, user: str, note: str | None
) -> Downtime:
    require_reason(session, ReasonKind.downtime, reason_code, "reason_code")
    downtime.reason_code = reason_code
    downtime.assigned_by = user
    if note is not None:
        downtime.note = note
    return downtime


def end_downtime(session: Session, downtime: Downtime, at: datetime | None) -> Downtime:
    if downtime.ended_at is not None:
        raise InvalidTransition("downtime", downtime.id, "ended", "end")
    when = _when(at)
    if when <= downtime.started_at:
        raise Invalid("at", "must be after the downtime start")
    downtime.ended_at = when
    return downtime


# --------------------------------------------------------------------------- materials
def lot_remaining(session: Session, lot: MaterialLot) -> float:
    used = session.scalar(
        select(func.coalesce(func.sum(Consumption.quantity), 0.0)).where(
            Consumption.material_lot_id == lot.id
        )
    )
    return lot.received_quantity - float(used or 0.0)


def consume(
    session: Session,
    batch: Batch,
    lot_number: str,
    quantity: float,
    user: str,
    run_id: int | None = None,
    part_id: int | None = None,
) -> Consumption:
    """Book material from a lot into a batch (and optionally one run or one part)."""
    if batch.status not in (BatchStatus.planned, BatchStatus.in_progress):
        raise InvalidTransition("batch", batch.id, batch.status, "consume material into")
    lot = session.scalars(select(MaterialLot).where(MaterialLot.lot_number == lot_number)).first()
    if lot is None:
        raise NotFound("material lot", lot_number)
    if run_id is not None:
        run = session.get(OperationRun, run_id)
        if run is None or run.batch_id != batch.id:
            raise Invalid("run_id", f"run {run_id} is not a run of batch {batch.id}")
    if part_id is not None:
        part = session.get(Part, part_id)
        if part is None or part.batch_id != batch.id:
            raise Invalid("part_id", f"part {part_id} is not a part of batch {batch.id}")
    remaining = lot_remaining(session, lot)
    if quantity > remaining + 1e-9:
        raise Conflict(
            f"material lot {lot_number!r} has {remaining:g} {lot.unit} left", field="quantity"
        )
    row = Consumption(
        material_lot_id=lot.id,
        batch_id=batch.id,
        run_id=run_id,
        part_id=part_id,
        quantity=quantity,
        recorded_by=user,
    )
    session.add(row)
    session.flush()
    return row
