"""The numbers people ask for, and genealogy: progress, energy, OEE, Pareto, batch records."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import HTMLResponse

from microfactory.mes import reports, trace, workflow
from microfactory.mes.api import report_schemas as out
from microfactory.mes.api.deps import (
    CurrentUser,
    Manager,
    RuntimeDep,
    SessionDep,
    effective_settings,
)
from microfactory.mes.api.schemas import MAX_INT, Instant
from microfactory.mes.errors import Invalid, NotFound
from microfactory.mes.models import Part, Product
from microfactory.mes.timeutil import now

router = APIRouter()

OrderId = Annotated[int, Path(ge=1, le=MAX_INT)]
BatchId = Annotated[int, Path(ge=1, le=MAX_INT)]
PartId = Annotated[int, Path(ge=1, le=MAX_INT)]
Json = dict[str, Any]


def _window(
    start: datetime | None, end: datetime | None, default_days: int = 1
) -> tuple[datetime, datetime]:
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise Invalid(name, "must carry a time zone (e.g. 2024-05-01T06:00:00Z)")
    end = end or now()
    start = start or end - timedelta(days=default_days)
    if end <= start:
        raise Invalid("end", "must be after start")
    return start, end


@router.get("/orders/{order_id}/progress", response_model=out.OrderProgress, tags=["reports"])
def order_progress(order_id: OrderId, _: CurrentUser, session: SessionDep) -> Json:
    """Where is my order: good parts out of the last operation, per batch and operation."""
    order = workflow.get_order(session, order_id)
    return {"order_id": order.id, "code": order.code, "status": order.status} | (
        reports.order_progress(session, order)
    )


@router.get("/batches/{batch_id}/progress", response_model=out.BatchProgress, tags=["reports"])
def batch_progress(batch_id: BatchId, _: CurrentUser, session: SessionDep) -> Json:
    batch = workflow.get_batch(session, batch_id)
    return {"batch_id": batch.id, "lot_number": batch.lot_number, "status": batch.status} | (
        reports.batch_progress(session, batch)
    )


@router.get("/orders/{order_id}/energy", response_model=out.OrderEnergy, tags=["reports"])
def order_energy(
    order_id: OrderId, _: CurrentUser, runtime: RuntimeDep, session: SessionDep
) -> Json:
    """Energy (kWh, kg CO2e) of an order, per batch and per operation."""
    settings = effective_settings(session, runtime.settings)
    return reports.order_energy(session, workflow.get_order(session, order_id), settings)


@router.get("/batches/{batch_id}/energy", response_model=out.BatchEnergy, tags=["reports"])
def batch_energy(
    batch_id: BatchId, _: CurrentUser, runtime: RuntimeDep, session: SessionDep
) -> Json:
    settings = effective_settings(session, runtime.settings)
    return reports.batch_energy(session, workflow.get_batch(session, batch_id), settings)


@router.get("/reports/energy", response_model=out.ProductEnergy, tags=["reports"])
def product_energy(
    _: Manager,
    runtime: RuntimeDep,
    session: SessionDep,
    product_id: Annotated[int, Query(ge=1, le=MAX_INT)],
    start: Instant | None = None,
    end: Instant | None = None,
    bucket: Literal["hour", "day", "week", "month"] = "day",
) -> Json:
    """Energy per part of one product over time: is it more than last week, and by how much?"""
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("product", product_id)
    start, end = _window(start, end, default_days=30)
    if (end - start).days > 800:
        raise Invalid("start", "window longer than 800 days")
    settings = effective_settings(session, runtime.settings)
    return {
        "product_id": product.id,
        "code": product.code,
        "bucket": bucket,
        "timezone": settings.timezone,
        "co2e_g_per_kwh": settings.co2e_g_per_kwh,
        "series": reports.product_energy(session, product.id, start, end, bucket, settings),
    }


@router.get("/reports/oee", response_model=out.OeeReport, tags=["reports"])
def oee(
    _: Manager,
    runtime: RuntimeDep,
    session: SessionDep,
    machine_id: Annotated[str, Query(min_length=1, max_length=64)],
    start: Instant | None = None,
    end: Instant | None = None,
    by: Literal["window", "shift"] = "window",
) -> Json:
    """OEE of a machine over a window or per shift, with planned time and ideal cycle time."""
    machine = workflow.get_machine(session, machine_id)
    start, end = _window(start, end)
    if by == "shift":
        return {
            "machine_id": machine.id,
            "by": "shift",
            "shifts": reports.machine_oee_by_shift(session, machine, start, end, runtime.settings),
        }
    return {"by": "window"} | reports.machine_oee(session, machine, start, end)


@router.get("/reports/downtime-pareto", response_model=out.DowntimePareto, tags=["reports"])
def downtime_pareto(
    _: Manager,
    session: SessionDep,
    start: Instant | None = None,
    end: Instant | None = None,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
) -> Json:
    """Why was the mill down: downtime per reason, largest first, with cumulative share."""
    if machine_id:
        workflow.get_machine(session, machine_id)
    start, end = _window(start, end, default_days=7)
    return {
        "start": start.isoformat(),
        "end": end.isoformat(),
        "machine_id": machine_id,
        "rows": reports.pareto(session, start, end, machine_id),
    }


@router.get("/parts/{part_id}/trace", response_model=out.PartTrace, tags=["traceability"])
def part_trace(part_id: PartId, _: CurrentUser, runtime: RuntimeDep, session: SessionDep) -> Json:
    """Backward genealogy: materials, machines, operators, times, energy, telemetry window."""
    part = session.get(Part, part_id)
    if part is None:
        raise NotFound("part", part_id)
    return trace.part_trace(session, part, effective_settings(session, runtime.settings))


@router.get("/batches/{batch_id}/record", response_model=out.BatchRecord, tags=["traceability"])
def batch_record(
    batch_id: BatchId, _: CurrentUser, runtime: RuntimeDep, session: SessionDep
) -> Json:
    """The batch record (backward genealogy of a batch) as JSON."""
    batch = workflow.get_batch(session, batch_id)
    return trace.batch_record(session, batch, effective_settings(session, runtime.settings))


@router.get("/batches/{batch_id}/record.html", response_class=HTMLResponse, tags=["traceability"])
def batch_record_html(
    batch_id: BatchId, _: CurrentUser, runtime: RuntimeDep, session: SessionDep
) -> HTMLResponse:
    """The batch record as a printable, self-contained HTML page."""
    batch = workflow.get_batch(session, batch_id)
    record = trace.batch_record(session, batch, effective_settings(session, runtime.settings))
    return HTMLResponse(trace.batch_record_html(record))


@router.get(
    "/material-lots/{lot_number}/trace", response_model=out.MaterialTrace, tags=["traceability"]
)
def material_trace(
    lot_number: Annotated[str, Path(min_length=1, max_length=64)],
    _: CurrentUser,
    session: SessionDep,
) -> Json:
    """Forward genealogy: every batch, part and order a material lot reached."""
    return trace.material_forward(session, lot_number)
