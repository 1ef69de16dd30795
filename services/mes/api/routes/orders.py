"""Orders and their batches: planning, release, and putting a batch on a machine."""

from __future__ import annotations

from typing import Annotated, TypeVar

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from microfactory.mes import workflow
from microfactory.mes.api.deps import (
    CurrentUser,
    Limit,
    Manager,
    Offset,
    Operator,
    RuntimeDep,
    SessionDep,
    audit_note,
)
from microfactory.mes.api.paging import paginate
from microfactory.mes.api.schemas import (
    MAX_INT,
    BatchCreate,
    BatchPublic,
    ConsumeIn,
    ConsumptionPublic,
    OrderCreate,
    OrderPublic,
    OrderUpdate,
    Page,
    RunPublic,
    RunStart,
)
from microfactory.mes.errors import Conflict, Invalid, InvalidTransition, NotFound
from microfactory.mes.models import (
    Batch,
    BatchStatus,
    Consumption,
    OperationRun,
    Order,
    OrderStatus,
    Product,
)

router = APIRouter()

OrderId = Annotated[int, Path(ge=1, le=MAX_INT)]
BatchId = Annotated[int, Path(ge=1, le=MAX_INT)]


_Entity = TypeVar("_Entity", Order, Batch)


def _transitioned(request: Request, session: Session, kind: str, entity: _Entity) -> _Entity:
    """Commit a state change and write it to the audit trail with the new status."""
    session.commit()
    audit_note(request, kind, entity.id, status=entity.status)
    return entity


@router.get("/orders", response_model=Page[OrderPublic], tags=["orders"])
def list_orders(
    _: CurrentUser,
    session: SessionDep,
    status_: Annotated[OrderStatus | None, Query(alias="status")] = None,
    product_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    customer: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[OrderPublic]:
    """Orders by priority (highest first), then due date."""
    query = select(Order).order_by(Order.priority.desc(), Order.due_date, Order.id)
    if status_:
        query = query.where(Order.status == status_)
    if product_id:
        query = query.where(Order.product_id == product_id)
    if customer:
        query = query.where(Order.customer == customer)
    return paginate(session, query, limit, offset, OrderPublic)


@router.post(
    "/orders", response_model=OrderPublic, status_code=status.HTTP_201_CREATED, tags=["orders"]
)
def create_order(body: OrderCreate, request: Request, _: Manager, session: SessionDep) -> Order:
    if session.get(Product, body.product_id) is None:
        raise NotFound("product", body.product_id)
    if session.scalars(select(Order.id).where(Order.code == body.code)).first():
        raise Conflict(f"order {body.code!r} already exists", field="code")
    order = Order(**body.model_dump())
    session.add(order)
    session.commit()
    audit_note(request, "order", order.id, code=order.code, quantity=order.quantity)
    return order


@router.get("/orders/{order_id}", response_model=OrderPublic, tags=["orders"])
def read_order(order_id: OrderId, _: CurrentUser, session: SessionDep) -> Order:
    return workflow.get_order(session, order_id)


@router.patch("/orders/{order_id}", response_model=OrderPublic, tags=["orders"])
def update_order(
    order_id: OrderId, body: OrderUpdate, request: Request, _: Manager, session: SessionDep
) -> Order:
    """Edit an order while it is still planned."""
    order = workflow.get_order(session, order_id)
    if order.status != OrderStatus.planned:
        raise InvalidTransition("order", order.id, order.status, "edit")
    changes = body.model_dump(exclude_unset=True)
    if "quantity" in changes:
        if changes["quantity"] is None:
            raise Invalid("quantity", "cannot be null")
        planned = sum(b.quantity for b in order.batches)
        if changes["quantity"] < planned:
            raise Invalid("quantity", f"batches already plan {planned} parts")
    if "priority" in changes and changes["priority"] is None:
        raise Invalid("priority", "cannot be null")
    for key, value in changes.items():
        setattr(order, key, value)
    session.commit()
    audit_note(request, "order", order.id, **changes)
    return order


@router.post("/orders/{order_id}/release", response_model=OrderPublic, tags=["orders"])
def release_order(order_id: OrderId, request: Request, _: Manager, session: SessionDep) -> Order:
    """Release to the shop floor; creates one batch for the whole quantity if none planned."""
    order = workflow.release_order(session, workflow.get_order(session, order_id))
    return _transitioned(request, session, "order", order)


@router.post("/orders/{order_id}/cancel", response_model=OrderPublic, tags=["orders"])
def cancel_order(order_id: OrderId, request: Request, _: Manager, session: SessionDep) -> Order:
    order = workflow.cancel_order(session, workflow.get_order(session, order_id))
    return _transitioned(request, session, "order", order)


@router.post("/orders/{order_id}/complete", response_model=OrderPublic, tags=["orders"])
def complete_order(order_id: OrderId, request: Request, _: Manager, session: SessionDep) -> Order:
    """Close an order by hand (e.g. a short delivery accepted by the customer)."""
    order = workflow.complete_order(session, workflow.get_order(session, order_id))
    return _transitioned(request, session, "order", order)


@router.post(
    "/orders/{order_id}/batches",
    response_model=BatchPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["batches"],
)
def create_batch(
    order_id: OrderId, body: BatchCreate, request: Request, _: Manager, session: SessionDep
) -> Batch:
    order = workflow.get_order(session, order_id)
    batch = workflow.create_batch(session, order, body.quantity, body.lot_number)
    session.commit()
    audit_note(request, "batch", batch.id, lot_number=batch.lot_number, quantity=batch.quantity)
    return batch


@router.get("/batches", response_model=Page[BatchPublic], tags=["batches"])
def list_batches(
    _: CurrentUser,
    session: SessionDep,
    order_id: Annotated[int | None, Query(ge=1, le=MAX_INT)] = None,
    status_: Annotated[BatchStatus | None, Query(alias="status")] = None,
    lot_number: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> Page[BatchPublic]:
    query = select(Batch).order_by(Batch.id)
    if order_id:
        query = query.where(Batch.order_id == order_id)
    if status_:
        query = query.where(Batch.status == status_)
    if lot_number:
        query = query.where(Batch.lot_number == lot_number)
    return paginate(session, query, limit, offset, BatchPublic)


@router.get("/batches/{batch_id}", response_model=BatchPublic, tags=["batches"])
def read_batch(batch_id: BatchId, _: CurrentUser, session: SessionDep) -> Batch:
    return workflow.get_batch(session, batch_id)


@router.post(
    "/batches/{batch_id}/start",
    response_model=RunPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["runs"],
)
def start_batch(
    batch_id: BatchId,
    body: RunStart,
    request: Request,
    user: Operator,
    runtime: RuntimeDep,
    session: SessionDep,
) -> OperationRun:
    """Start an operation run: the batch goes on a machine and its context is published."""
    batch = workflow.get_batch(session, batch_id)
    run = workflow.start_run(
        session, batch, body.operation_id, body.machine_id, user.username, body.at
    )
    session.commit()
    audit_note(request, "run", run.id, batch=batch.lot_number, machine=run.machine_id)
    runtime.publish_contexts({run.machine_id})
    return run


@router.post("/batches/{batch_id}/complete", response_model=BatchPublic, tags=["batches"])
def complete_batch(batch_id: BatchId, request: Request, _: Operator, session: SessionDep) -> Batch:
    batch = workflow.complete_batch(session, workflow.get_batch(session, batch_id))
    return _transitioned(request, session, "batch", batch)


@router.post("/batches/{batch_id}/cancel", response_model=BatchPublic, tags=["batches"])
def cancel_batch(batch_id: BatchId, request: Request, _: Manager, session: SessionDep) -> Batch:
    batch = workflow.cancel_batch(session, workflow.get_batch(session, batch_id))
    return _transitioned(request, session, "batch", batch)


@router.post(
    "/batches/{batch_id}/consume",
    response_model=ConsumptionPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["materials"],
)
def consume(
    batch_id: BatchId, body: ConsumeIn, request: Request, user: Operator, session: SessionDep
) -> Consumption:
    """Book material from a lot (scanned or typed) into a batch, optionally one run or part."""
    batch = workflow.get_batch(session, batch_id)
    row = workflow.consume(
        session, batch, body.material_lot, body.quantity, user.username, body.run_id, body.part_id
    )
    session.commit()
    audit_note(
        request, "consumption", row.id, material_lot=body.material_lot, quantity=body.quantity
    )
    return row


@router.get(
    "/batches/{batch_id}/consumptions",
    response_model=Page[ConsumptionPublic],
    tags=["materials"],
)
def batch_consumptions(
    batch_id: BatchId, _: CurrentUser, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> Page[ConsumptionPublic]:
    workflow.get_batch(session, batch_id)
    query = select(Consumption).where(Consumption.batch_id == batch_id).order_by(Consumption.id)
    return paginate(session, query, limit, offset, ConsumptionPublic)
