"""Machines, products with their routing, reason codes and material lots."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, status
from sqlalchemy import select

from microfactory.mes.api.deps import (
    Admin,
    CurrentUser,
    Limit,
    Manager,
    Offset,
    SessionDep,
    audit_note,
)
from microfactory.mes.api.paging import paginate
from microfactory.mes.api.schemas import (
    MAX_INT,
    MachineCreate,
    MachinePublic,
    MachineStatePublic,
    MachineUpdate,
    MaterialLotCreate,
    MaterialLotPublic,
    Page,
    PartPublic,
    ProductCreate,
    ProductPublic,
    ProductUpdate,
    ReasonCodeIn,
    ReasonCodePublic,
    RoutingUpdate,
)
from microfactory.mes.errors import Conflict, Invalid, NotFound
from microfactory.mes.models import (
    Machine,
    MachineStateRecord,
    MaterialLot,
    Operation,
    Order,
    Part,
    Product,
    ReasonCode,
    ReasonKind,
)
from microfactory.mes.timeutil import now
from microfactory.mes.workflow import get_machine, lot_remaining

router = APIRouter()

MachineId = Annotated[str, Path(min_length=1, max_length=64)]
ProductId = Annotated[int, Path(ge=1, le=MAX_INT)]
LotNumber = Annotated[str, Path(min_length=1, max_length=64)]


# --------------------------------------------------------------------------- machines
@router.get("/machines", response_model=Page[MachinePublic], tags=["machines"])
def list_machines(
    _: CurrentUser,
    session: SessionDep,
    kind: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[MachinePublic]:
    query = select(Machine).order_by(Machine.id)
    if kind:
        query = query.where(Machine.kind == kind)
    return paginate(session, query, limit, offset, MachinePublic)


@router.post(
    "/machines",
    response_model=MachinePublic,
    status_code=status.HTTP_201_CREATED,
    tags=["machines"],
)
def create_machine(body: MachineCreate, request: Request, _: Admin, session: SessionDep) -> Machine:
    if session.get(Machine, body.id) is not None:
        raise Conflict(f"machine {body.id!r} already exists", field="id")
    machine = Machine(**body.model_dump())
    session.add(machine)
    session.commit()
    audit_note(request, "machine", machine.id, **body.model_dump())
    return machine


@router.get("/machines/{machine_id}", response_model=MachinePublic, tags=["machines"])
def read_machine(machine_id: MachineId, _: CurrentUser, session: SessionDep) -> Machine:
    return get_machine(session, machine_id)


@router.patch("/machines/{machine_id}", response_model=MachinePublic, tags=["machines"])
def update_machine(
    machine_id: MachineId, body: MachineUpdate, request: Request, _: Admin, session: SessionDep
) -> Machine:
    machine = get_machine(session, machine_id)
    changes = body.model_dump(exclude_unset=True)
    for key, value in changes.items():
        if value is None and key == "kind":
            raise Invalid("kind", "cannot be null")
        setattr(machine, key, value)
    session.commit()
    audit_note(request, "machine", machine.id, **changes)
    return machine


@router.get(
    "/machines/{machine_id}/states", response_model=Page[MachineStatePublic], tags=["machines"]
)
def machine_states(
    machine_id: MachineId,
    _: CurrentUser,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[MachineStatePublic]:
    """State history reported by the gateway, newest first."""
    get_machine(session, machine_id)
    query = (
        select(MachineStateRecord)
        .where(MachineStateRecord.machine_id == machine_id)
        .order_by(MachineStateRecord.ts_ns.desc())
    )
    return paginate(session, query, limit, offset, MachineStatePublic)


@router.get("/machines/{machine_id}/parts", response_model=Page[PartPublic], tags=["machines"])
def machine_parts(
    machine_id: MachineId,
    _: CurrentUser,
    session: SessionDep,
    unattributed: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[PartPublic]:
    """Parts made on a machine; ``unattributed`` shows those made outside any run."""
    get_machine(session, machine_id)
    query = select(Part).where(Part.machine_id == machine_id).order_by(Part.completed_at.desc())
    if unattributed:
        query = query.where(Part.run_id.is_(None))
    return paginate(session, query, limit, offset, PartPublic)


# --------------------------------------------------------------------------- products
def _routing(body_ops: list[object]) -> list[Operation]:
    ops = []
    seqs = set()
    for op in body_ops:
        data = op.model_dump()  # type: ignore[attr-defined]
        if data["seq"] in seqs:
            raise Invalid("operations", f"sequence number {data['seq']} used twice")
        seqs.add(data["seq"])
        ops.append(Operation(**data))
    return ops


@router.get("/products", response_model=Page[ProductPublic], tags=["products"])
def list_products(
    _: CurrentUser, session: SessionDep, limit: Limit = 100, offset: Offset = 0
) -> Page[ProductPublic]:
    return paginate(session, select(Product).order_by(Product.id), limit, offset, ProductPublic)


@router.post(
    "/products",
    response_model=ProductPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["products"],
)
def create_product(
    body: ProductCreate, request: Request, _: Manager, session: SessionDep
) -> Product:
    if session.scalars(select(Product).where(Product.code == body.code)).first():
        raise Conflict(f"product {body.code!r} already exists", field="code")
    product = Product(code=body.code, name=body.name, description=body.description)
    product.operations = _routing(list(body.operations))
    session.add(product)
    session.commit()
    audit_note(request, "product", product.id, code=product.code)
    return product


def _product(session: SessionDep, product_id: int) -> Product:
    product = session.get(Product, product_id)
    if product is None:
        raise NotFound("product", product_id)
    return product


@router.get("/products/{product_id}", response_model=ProductPublic, tags=["products"])
def read_product(product_id: ProductId, _: CurrentUser, session: SessionDep) -> Product:
    return _product(session, product_id)


@router.patch("/products/{product_id}", response_model=ProductPublic, tags=["products"])
def update_product(
    product_id: ProductId, body: ProductUpdate, request: Request, _: Manager, session: SessionDep
) -> Product:
    product = _product(session, product_id)
    changes = body.model_dump(exclude_unset=True)
    if "name" in changes and changes["name"] is None:
        raise Invalid("name", "cannot be null")
    for key, value in changes.items():
        setattr(product, key, value)
    session.commit()
    audit_note(request, "product", product.id, **changes)
    return product


@router.put("/products/{product_id}/routing", response_model=ProductPublic, tags=["products"])
def replace_routing(
    product_id: ProductId, body: RoutingUpdate, request: Request, _: Manager, session: SessionDep
) -> Product:
    """Replace the routing; refused once an order uses the product (history must not move)."""
    product = _product(session, product_id)
    used = session.scalars(select(Order.id).where(Order.product_id == product.id)).first()
    if used is not None:
        raise Conflict(
            f"product {product.code!r} has orders; create a new product version instead",
            field="operations",
        )
    product.operations = []
    session.flush()
    product.operations = _routing(list(body.operations))
    session.commit()
    audit_note(request, "product", product.id, routing=len(body.operations))
    return product


# --------------------------------------------------------------------------- reason codes
@router.get("/reason-codes", response_model=Page[ReasonCodePublic], tags=["reasons"])
def list_reasons(
    _: CurrentUser,
    session: SessionDep,
    kind: ReasonKind | None = None,
    limit: Limit = 200,
    offset: Offset = 0,
) -> Page[ReasonCodePublic]:
    query = select(ReasonCode).order_by(ReasonCode.kind, ReasonCode.code)
    if kind:
        query = query.where(ReasonCode.kind == kind)
    return paginate(session, query, limit, offset, ReasonCodePublic)


@router.post(
    "/reason-codes",
    response_model=ReasonCodePublic,
    status_code=status.HTTP_201_CREATED,
    tags=["reasons"],
)
def create_reason(
    body: ReasonCodeIn, request: Request, _: Admin, session: SessionDep
) -> ReasonCode:
    exists = session.scalars(
        select(ReasonCode).where(ReasonCode.kind == body.kind, ReasonCode.code == body.code)
    ).first()
    if exists:
        raise Conflict(f"{body.kind} reason {body.code!r} already exists", field="code")
    row = ReasonCode(**body.model_dump())
    session.add(row)
    session.commit()
    audit_note(request, "reason_code", row.id, **body.model_dump())
    return row


# --------------------------------------------------------------------------- material lots
def _lot_public(session: SessionDep, lot: MaterialLot) -> MaterialLotPublic:
    out = MaterialLotPublic.model_validate(lot)
    out.remaining_quantity = lot_remaining(session, lot)
    return out


@router.get("/material-lots", response_model=Page[MaterialLotPublic], tags=["materials"])
def list_lots(
    _: CurrentUser,
    session: SessionDep,
    material: Annotated[str | None, Query(max_length=200)] = None,
    supplier: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Page[MaterialLotPublic]:
    query = select(MaterialLot).order_by(MaterialLot.id)
    if material:
        query = query.where(MaterialLot.material == material)
    if supplier:
        query = query.where(MaterialLot.supplier == supplier)
    page = paginate(session, query, limit, offset, MaterialLotPublic)
    for item in page.items:
        lot = session.get(MaterialLot, item.id)
        if lot is not None:
            item.remaining_quantity = lot_remaining(session, lot)
    return page


@router.post(
    "/material-lots",
    response_model=MaterialLotPublic,
    status_code=status.HTTP_201_CREATED,
    tags=["materials"],
)
def receive_lot(
    body: MaterialLotCreate, request: Request, _: Manager, session: SessionDep
) -> MaterialLotPublic:
    """Goods receipt of a material lot."""
    if session.scalars(
        select(MaterialLot).where(MaterialLot.lot_number == body.lot_number)
    ).first():
        raise Conflict(f"material lot {body.lot_number!r} already exists", field="lot_number")
    data = body.model_dump()
    data["received_at"] = data["received_at"] or now()
    lot = MaterialLot(**data)
    session.add(lot)
    session.commit()
    audit_note(request, "material_lot", lot.lot_number, quantity=lot.received_quantity)
    return _lot_public(session, lot)


@router.get("/material-lots/{lot_number}", response_model=MaterialLotPublic, tags=["materials"])
def read_lot(lot_number: LotNumber, _: CurrentUser, session: SessionDep) -> MaterialLotPublic:
    lot = session.scalars(select(MaterialLot).where(MaterialLot.lot_number == lot_number)).first()
    if lot is None:
        raise NotFound("material lot", lot_number)
    return _lot_public(session, lot)
