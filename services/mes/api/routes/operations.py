"""Operation runs on the shop floor: pause, resume, complete, parts, scrap and downtime."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import select

from microfactory.mes import workflow
from microfactory.mes.api.deps import (
    CurrentUser,
    Limit,
    Offset,
    Operator,
    RuntimeDep,
    SessionDep,
    audit_note,
)
from microfactory.mes.api.paging import paginate
from microfactory.mes.api.schemas import (
    MAX_INT,
    At,
    DowntimeCreate,
    DowntimePublic,
    DowntimeReasonIn,
    Instant,
    Page,
    PartPublic,
    PartsIn,
    RunPublic,
    ScrapIn,
    ScrapPublic,
)
from microfactory.mes.errors import NotFound
from microfactory.mes.models import Downtime, OperationRun, Part, RunStatus, Scrap

router = APIRouter()

RunId = Annotated[int, Path(ge=1, le=MAX_INT)]
DowntimeId = Annotated[int, Path(ge=1, le=MAX_INT)]
PartId = Annotated[int, Path(ge=1, le=MAX_INT)]


@router.get("/runs", response_model=Page[RunPublic], tags=["runs"])
def list_runs(
    _: CurrentUser,
    session: SessionDep,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
    batch_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    status_: Annotated[RunStatus | None, Query(alias="status")] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[RunPublic]:
    query = select(OperationRun).order_by(OperationRun.id.desc())
    if machine_id:
        query = query.where(OperationRun.machine_id == machine_id)
    if batch_id:
        query = query.where(OperationRun.batch_id == batch_id)
    if status_:
        query = query.where(OperationRun.status == status_)
    return paginate(session, query, limit, offset, RunPublic)


@router.get("/runs/{run_id}", response_model=RunPublic, tags=["runs"])
def read_run(run_id: RunId, _: CurrentUser, session: SessionDep) -> OperationRun:
    return workflow.get_run(session, run_id)


def _after(
    request: Request, runtime: RuntimeDep, session: SessionDep, run: OperationRun, action: str
) -> OperationRun:
    session.commit()
    audit_note(request, "run", run.id, action=action, status=run.status)
    runtime.publish_contexts({run.machine_id})
    return run


@router.post("/runs/{run_id}/pause", response_model=RunPublic, tags=["runs"])
def pause(
    run_id: RunId,
    request: Request,
    _: Operator,
    runtime: RuntimeDep,
    session: SessionDep,
    body: At | None = None,
) -> OperationRun:
    run = workflow.pause_run(session, workflow.get_run(session, run_id), body.at if body else None)
    return _after(request, runtime, session, run, "pause")


@router.post("/runs/{run_id}/resume", response_model=RunPublic, tags=["runs"])
def resume(
    run_id: RunId,
    request: Request,
    user: Operator,
    runtime: RuntimeDep,
    session: SessionDep,
    body: At | None = None,
) -> OperationRun:
    run = workflow.resume_run(
        session, workflow.get_run(session, run_id), user.username, body.at if body else None
    )
    return _after(request, runtime, session, run, "resume")


@router.post("/runs/{run_id}/complete", response_model=RunPublic, tags=["runs"])
def complete(
    run_id: RunId,
    request: Request,
    _: Operator,
    runtime: RuntimeDep,
    session: SessionDep,
    body: At | None = None,
) -> OperationRun:
    run = workflow.complete_run(
        session, workflow.get_run(session, run_id), body.at if body else None
    )
    return _after(request, runtime, session, run, "complete")


@router.post(
    "/runs/{run_id}/parts",
    response_model=list[PartPublic],
    status_code=status.HTTP_201_CREATED,
    tags=["parts"],
)
def count_parts(
    run_id: RunId, body: PartsIn, request: Request, _: Operator, session: SessionDep
) -> list[Part]:
    """Count parts by hand where no machine counter reports them (optionally serialised)."""
    run = workflow.get_run(session, run_id)
    parts = workflow.record_parts(session, run, body.quantity, body.serials, body.at)
    session.commit()
    audit_note(request, "run", run.id, action="parts", quantity=body.quantity)
    return parts


@router.post(
    "/runs/{run_id}/scrap",
    response_model=ScrapPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["parts"],
)
def scrap(
    run_id: RunId, body: ScrapIn, request: Request, user: Operator, session: SessionDep
) -> Scrap:
    run = workflow.get_run(session, run_id)
    row = workflow.record_scrap(
        session, run, body.quantity, body.reason_code, user.username, body.note, body.part_id
    )
    session.commit()
    audit_note(request, "scrap", row.id, run=run.id, quantity=row.quantity, reason=row.reason_code)
    return row


@router.get("/parts", response_model=Page[PartPublic], tags=["parts"])
def list_parts(
    _: CurrentUser,
    session: SessionDep,
    run_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    batch_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
    good: bool | None = None,
    serial: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[PartPublic]:
    query = select(Part).order_by(Part.completed_at.desc(), Part.id.desc())
    if run_id:
        query = query.where(Part.run_id == run_id)
    if batch_id:
        query = query.where(Part.batch_id == batch_id)
    if machine_id:
        query = query.where(Part.machine_id == machine_id)
    if good is not None:
        query = query.where(Part.good == good)
    if serial:
        query = query.where(Part.serial == serial)
    return paginate(session, query, limit, offset, PartPublic)


@router.get("/parts/{part_id}", response_model=PartPublic, tags=["parts"])
def read_part(part_id: PartId, _: CurrentUser, session: SessionDep) -> Part:
    part = session.get(Part, part_id)
    if part is None:
        raise NotFound("part", part_id)
    return part


@router.get("/scrap", response_model=Page[ScrapPublic], tags=["parts"])
def list_scrap(
    _: CurrentUser,
    session: SessionDep,
    run_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
    reason_code: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[ScrapPublic]:
    query = select(Scrap).order_by(Scrap.id.desc())
    if run_id:
        query = query.where(Scrap.run_id == run_id)
    if machine_id:
        query = query.where(Scrap.machine_id == machine_id)
    if reason_code:
        query = query.where(Scrap.reason_code == reason_code)
    return paginate(session, query, limit, offset, ScrapPublic)


# --------------------------------------------------------------------------- downtime
@router.get("/downtime", response_model=Page[DowntimePublic], tags=["downtime"])
def list_downtime(
    _: CurrentUser,
    session: SessionDep,
    machine_id: Annotated[str | None, Query(max_length=64)] = None,
    reason_code: Annotated[str | None, Query(max_length=64)] = None,
    open_: Annotated[bool | None, Query(alias="open")] = None,
    since: Instant | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[DowntimePublic]:
    """Downtime, newest first; ``reason_code=unassigned`` is the operator's to-do list."""
    query = select(Downtime).order_by(Downtime.started_at.desc())
    if machine_id:
        query = query.where(Downtime.machine_id == machine_id)
    if reason_code:
        query = query.where(Downtime.reason_code == reason_code)
    if open_ is not None:
        query = query.where(
            Downtime.ended_at.is_(None) if open_ else Downtime.ended_at.is_not(None)
        )
    if since is not None:
        query = query.where(Downtime.started_at >= since)
    return paginate(session, query, limit, offset, DowntimePublic)


@router.post(
    "/downtime",
    response_model=DowntimePublic,
    status_code=status.HTTP_201_CREATED,
    tags=["downtime"],
)
def record_downtime(
    body: DowntimeCreate, request: Request, user: Operator, session: SessionDep
) -> Downtime:
    """Record downtime the machine could not report (e.g. waiting for material)."""
    row = workflow.record_downtime(
        session,
        body.machine_id,
        body.started_at,
        body.ended_at,
        body.reason_code,
        user.username,
        body.note,
    )
    session.commit()
    audit_note(request, "downtime", row.id, machine=row.machine_id, reason=row.reason_code)
    return row


def _downtime(session: SessionDep, downtime_id: int) -> Downtime:
    row = session.get(Downtime, downtime_id)
    if row is None:
        raise NotFound("downtime", downtime_id)
    return row


@router.get("/downtime/{downtime_id}", response_model=DowntimePublic, tags=["downtime"])
def read_downtime(downtime_id: DowntimeId, _: CurrentUser, session: SessionDep) -> Downtime:
    return _downtime(session, downtime_id)


@router.post("/downtime/{downtime_id}/reason", response_model=DowntimePublic, tags=["downtime"])
def assign_reason(
    downtime_id: DowntimeId,
    body: DowntimeReasonIn,
    request: Request,
    user: Operator,
    session: SessionDep,
) -> Downtime:
    """Say why the machine was down: turns an ``unassigned`` period into a Pareto entry."""
    row = workflow.assign_downtime_reason(
        session, _downtime(session, downtime_id), body.reason_code, user.username, body.note
    )
    session.commit()
    audit_note(request, "downtime", row.id, reason=row.reason_code)
    return row


@router.post("/downtime/{downtime_id}/end", response_model=DowntimePublic, tags=["downtime"])
def end_downtime(
    downtime_id: DowntimeId,
    request: Request,
    _: Operator,
    session: SessionDep,
    body: At | None = None,
) -> Downtime:
    row = workflow.end_downtime(session, _downtime(session, downtime_id), body.at if body else None)
    session.commit()
    audit_note(request, "downtime", row.id, action="end")
    return row
