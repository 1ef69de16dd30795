"""Built-in reference data and the demo workshop's data (products, orders, lots, users).

The demo data matches the simulated workshop (``microfactory/cli/demo_site.yaml``): the machine
ids, kinds and ideal cycle times are those of :mod:`microfactory.sim.machines`. Everything here is
idempotent: seeding twice changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from microfactory.mes import workflow
from microfactory.mes.errors import MesError
from microfactory.mes.models import (
    Batch,
    BatchStatus,
    Consumption,
    Machine,
    MaterialLot,
    Operation,
    OperationRun,
    Order,
    OrderStatus,
    Product,
    ReasonCode,
    ReasonKind,
    Role,
    RunStatus,
    User,
)
from microfactory.mes.security import DEMO_PASSWORDS, hash_password

log = logging.getLogger(__name__)

# Codes the MES itself writes (ingest of machine events); they must always exist.
BUILTIN_REASONS: tuple[tuple[ReasonKind, str, str, bool], ...] = (
    (ReasonKind.downtime, "unassigned", "machine reported downtime, reason not yet given", False),
    (ReasonKind.scrap, "machine_reported", "scrap counted by the machine itself", False),
)

DEMO_REASONS: tuple[tuple[ReasonKind, str, str, bool], ...] = (
    (ReasonKind.downtime, "breakdown", "machine breakdown / fault", False),
    (ReasonKind.downtime, "tool_change", "tool change or tool breakage", False),
    (ReasonKind.downtime, "material_wait", "waiting for material", False),
    (ReasonKind.downtime, "power_loss", "power loss", False),
    (ReasonKind.downtime, "maintenance", "planned maintenance", True),
    (ReasonKind.scrap, "dimension", "out of tolerance", False),
    (ReasonKind.scrap, "surface", "surface defect", False),
    (ReasonKind.scrap, "material", "material defect", False),
)


@dataclass(frozen=True, slots=True)
class DemoMachine:
    id: str
    kind: str
    name: str
    nominal_power_w: float | None
    ideal_cycle_time_s: float | None


# ids and kinds as in microfactory/cli/demo_site.yaml; cycle times as in simulators/machines.py
DEMO_MACHINES: tuple[DemoMachine, ...] = (
    DemoMachine("mill-1", "cnc_mill", "CNC mill", 7500.0, 45.0),
    DemoMachine("laser-1", "laser_cutter", "Laser cutter", 12000.0, 20.0),
    DemoMachine("printer-1", "printer_3d", "3D printer", 300.0, 300.0),
    DemoMachine("assembly-1", "assembly_station", "Assembly station", 800.0, 30.0),
    DemoMachine("meter-1", "energy_meter", "Main energy meter", None, None),
)

# product code, name, routing (seq, operation, machine kind, ideal cycle time s)
DEMO_PRODUCTS: tuple[tuple[str, str, tuple[tuple[int, str, str, float], ...]], ...] = (
    (
        "BRK-100",
        "Steel mounting bracket",
        ((10, "laser cut blank", "laser_cutter", 20.0), (20, "mill bores", "cnc_mill", 45.0)),
    ),
    (
        "ENC-300",
        "Sensor enclosure",
        (
            (10, "print housing", "printer_3d", 300.0),
            (20, "assemble", "assembly_station", 30.0),
        ),
    ),
)

# code, product, quantity, customer, priority, release it in the demo
DEMO_ORDERS: tuple[tuple[str, str, int, str, int, bool], ...] = (
    ("SO-1001", "BRK-100", 400, "Alpine Bikes GmbH", 10, True),
    ("SO-1002", "ENC-300", 60, "Lakeside Labs", 5, True),
    ("SO-1003", "BRK-100", 120, "Nordic Trailers AB", 0, False),
)

# lot number, material, supplier, quantity, unit
DEMO_LOTS: tuple[tuple[str, str, str, float, str], ...] = (
    ("ML-S235-2405", "steel sheet S235 2 mm", "Stahl Nord", 800.0, "kg"),
    ("ML-S235-2406", "steel sheet S235 2 mm", "Stahl Nord", 800.0, "kg"),
    ("ML-PETG-0417", "PETG filament black", "FilaWorks", 20.0, "kg"),
    ("ML-M3-0088", "M3x8 screws A2", "Fastenal", 5000.0, "pcs"),
)

# which lot goes into which order's first batch, and how much
DEMO_CONSUMPTION: tuple[tuple[str, str, float], ...] = (
    ("SO-1001", "ML-S235-2405", 60.0),
    ("SO-1002", "ML-PETG-0417", 2.5),
    ("SO-1002", "ML-M3-0088", 240.0),
)

# order, operation seq, machine: what the demo puts on the simulated machines
DEMO_RUNS: tuple[tuple[str, int, str], ...] = (
    ("SO-1001", 10, "laser-1"),
    ("SO-1001", 20, "mill-1"),
    ("SO-1002", 10, "printer-1"),
    ("SO-1002", 20, "assembly-1"),
)


def ensure_builtin(session: Session) -> None:
    """The reason codes the MES writes by itself; called at every start."""
    _reasons(session, BUILTIN_REASONS)


def _reasons(session: Session, rows: tuple[tuple[ReasonKind, str, str, bool], ...]) -> None:
    for kind, code, description, planned in rows:
        exists = session.scalars(
            select(ReasonCode).where(ReasonCode.kind == kind, ReasonCode.code == code)
        ).first()
        if exists is None:
            session.add(ReasonCode(kind=kind, code=code, description=description, planned=planned))
    session.flush()


def ensure_user(session: Session, username: str, password: str, role: Role) -> User:
    user = session.scalars(select(User).where(User.username == username)).first()
    if user is None:
        user = User(username=username, password_hash=hash_password(password), role=role)
        session.add(user)
        session.flush()
    return user


def seed_demo(session: Session, *, users: bool = True) -> None:
    """Machines, products with routings, orders, material lots, reason codes, demo users."""
    ensure_builtin(session)
    _reasons(session, DEMO_REASONS)
    if users:
        for role in Role:
            ensure_user(session, role.value, DEMO_PASSWORDS[role.value], role)
    for m in DEMO_MACHINES:
        if session.get(Machine, m.id) is None:
            session.add(
                Machine(
                    id=m.id,
                    kind=m.kind,
                    name=m.name,
                    nominal_power_w=m.nominal_power_w,
                    ideal_cycle_time_s=m.ideal_cycle_time_s,
                )
            )
    products: dict[str, Product] = {}
    for code, name, routing in DEMO_PRODUCTS:
        product = session.scalars(select(Product).where(Product.code == code)).first()
        if product is None:
            product = Product(code=code, name=name)
            product.operations = [
                Operation(seq=seq, name=op, machine_kind=kind, ideal_cycle_time_s=ct)
                for seq, op, kind, ct in routing
            ]
            session.add(product)
        products[code] = product
    for lot, material, supplier, qty, unit in DEMO_LOTS:
        if session.scalars(select(MaterialLot).where(MaterialLot.lot_number == lot)).first():
            continue
        session.add(
            MaterialLot(
                lot_number=lot,
                material=material,
                supplier=supplier,
                received_quantity=qty,
                unit=unit,
            )
        )
    session.flush()
    for code, product_code, qty, customer, priority, _release in DEMO_ORDERS:
        if session.scalars(select(Order).where(Order.code == code)).first() is None:
            session.add(
                Order(
                    code=code,
                    product=products[product_code],
                    quantity=qty,
                    customer=customer,
                    priority=priority,
                )
            )
    session.flush()


def start_demo_batches(
    session: Session, *, operator: str = "operator", at: datetime | None = None
) -> set[str]:
    """Release the demo orders, book their material and put their batches on the machines.

    Returns the machines whose context changed (to publish after commit). Orders already
    released and machines already busy are left alone, so a restarted demo carries on.
    """
    orders = {o.code: o for o in session.scalars(select(Order)).all()}
    for code, *_rest, release in DEMO_ORDERS:
        order = orders.get(code)
        if release and order is not None and order.status == OrderStatus.planned:
            workflow.release_order(session, order)
    session.flush()
    for order_code, lot, qty in DEMO_CONSUMPTION:
        batch = _first_open_batch(orders.get(order_code))
        if batch is None or any(c == lot for c in _consumed_lots(session, batch)):
            continue
        try:
            workflow.consume(session, batch, lot, qty, operator)
        except MesError as err:
            log.warning("demo: material %s not booked into %s: %s", lot, batch.lot_number, err)
    changed: set[str] = set()
    for order_code, seq, machine_id in DEMO_RUNS:
        batch = _first_open_batch(orders.get(order_code))
        if batch is None:
            continue
        busy = session.scalars(
            select(OperationRun.id).where(
                OperationRun.machine_id == machine_id, OperationRun.status == RunStatus.running
            )
        ).first()
        if busy is not None:
            continue
        op = next(o for o in batch.order.product.operations if o.seq == seq)
        try:
            workflow.start_run(session, batch, op.id, machine_id, operator, at)
        except MesError as err:
            log.warning("demo: batch %s not started on %s: %s", batch.lot_number, machine_id, err)
            continue
        changed.add(machine_id)
    session.flush()
    return changed


def _first_open_batch(order: Order | None) -> Batch | None:
    if order is None or order.status not in (OrderStatus.released, OrderStatus.in_progress):
        return None
    for batch in order.batches:
        if batch.status in (BatchStatus.planned, BatchStatus.in_progress):
            return batch
    return None


def _consumed_lots(session: Session, batch: Batch) -> list[str]:
    rows = session.scalars(
        select(MaterialLot.lot_number)
        .join(Consumption, Consumption.material_lot_id == MaterialLot.id)
        .where(Consumption.batch_id == batch.id)
    ).all()
    return list(rows)
