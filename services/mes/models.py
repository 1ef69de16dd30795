"""The MES database model: a small ISA-95-flavoured schema, one table per shop-floor noun."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime refused: the MES stores UTC only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON}


class Role(StrEnum):
    operator = "operator"
    manager = "manager"
    admin = "admin"


class OrderStatus(StrEnum):
    planned = "planned"
    released = "released"
    in_progress = "in_progress"
    done = "done"
    cancelled = "cancelled"


class BatchStatus(StrEnum):
    planned = "planned"
    in_progress = "in_progress"
    done = "done"
    cancelled = "cancelled"


class RunStatus(StrEnum):
    running = "running"
    paused = "paused"
    done = "done"


class ReasonKind(StrEnum):
    scrap = "scrap"
    downtime = "downtime"


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    full_name: Mapped[str | None] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    # in every token's claims; bumped on a password change or a disable, which revokes them all
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class Machine(Base):
    __tablename__ = "machines"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(200))
    nominal_power_w: Mapped[float | None] = mapped_column(Float)
    ideal_cycle_time_s: Mapped[float | None] = mapped_column(Float)
    state: Mapped[str | None] = mapped_column(String(16))
    state_since: Mapped[datetime | None]


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(Text)
    operations: Mapped[list[Operation]] = relationship(
        back_populates="product", order_by="Operation.seq", cascade="all, delete-orphan"
    )


class Operation(Base):
    """One step of a product's routing."""

    __tablename__ = "operations"
    __table_args__ = (UniqueConstraint("product_id", "seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    seq: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))
    machine_kind: Mapped[str] = mapped_column(String(64))
    ideal_cycle_time_s: Mapped[float] = mapped_column(Float)
    product: Mapped[Product] = relationship(back_populates="operations")


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    due_date: Mapped[datetime | None]
    priority: Mapped[int] = mapped_column(Integer, default=0)
    customer: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default=OrderStatus.planned)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    released_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    product: Mapped[Product] = relationship()
    batches: Mapped[list[Batch]] = relationship(back_populates="order", order_by="Batch.id")


class Batch(Base):
    """A lot of an order, identified on the shop floor (and in InfluxDB) by its lot number."""

    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_number: Mapped[str] = mapped_column(String(64), unique=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16), default=BatchStatus.planned)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
    order: Mapped[Order] = relationship(back_populates="batches")
    runs: Mapped[list[OperationRun]] = relationship(
        back_populates="batch", order_by="OperationRun.id"
    )


class OperationRun(Base):
    """A batch going through one routing operation on one machine."""

    __tablename__ = "operation_runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    operation_id: Mapped[int] = mapped_column(ForeignKey("operations.id"))
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    operator: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=RunStatus.running)
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    batch: Mapped[Batch] = relationship(back_populates="runs")
    operation: Mapped[Operation] = relationship()
    machine: Mapped[Machine] = relationship()
    segments: Mapped[list[RunSegment]] = relationship(
        back_populates="run", order_by="RunSegment.started_at"
    )


class RunSegment(Base):
    """An uninterrupted interval of a run; parts are attributed by their time against these."""

    __tablename__ = "run_segments"
    __table_args__ = (Index("ix_run_segments_machine_start", "machine_id", "started_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("operation_runs.id"))
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    operator: Mapped[str | None] = mapped_column(String(64))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    run: Mapped[OperationRun] = relationship(back_populates="segments")


class Part(Base):
    __tablename__ = "parts"
    __table_args__ = (Index("ix_parts_machine_ts", "machine_id", "completed_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("operation_runs.id"), index=True)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"), index=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    serial: Mapped[str | None] = mapped_column(String(64), unique=True)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    good: Mapped[bool] = mapped_column(Boolean, default=True)
    completed_at: Mapped[datetime]
    energy_wh: Mapped[float | None] = mapped_column(Float)
    cycle_time_s: Mapped[float | None] = mapped_column(Float)
    source: Mapped[str] = mapped_column(String(16), default="machine")
    event_id: Mapped[str | None] = mapped_column(String(128), unique=True)
    run: Mapped[OperationRun | None] = relationship()


class ReasonCode(Base):
    __tablename__ = "reason_codes"
    __table_args__ = (UniqueConstraint("kind", "code"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    code: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(200))
    planned: Mapped[bool] = mapped_column(Boolean, default=False)


class Scrap(Base):
    __tablename__ = "scrap"

    id: Mapped[int] = mapped_column(primary_key=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("operation_runs.id"), index=True)
    part_id: Mapped[int | None] = mapped_column(ForeignKey("parts.id"))
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"))
    quantity: Mapped[int] = mapped_column(Integer)
    reason_code: Mapped[str] = mapped_column(String(64))
    note: Mapped[str | None] = mapped_column(Text)
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)


class Downtime(Base):
    __tablename__ = "downtime"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(ForeignKey("machines.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("operation_runs.id"))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]
    state: Mapped[str | None] = mapped_column(String(16))
    reason_code: Mapped[str] = mapped_column(String(64), default="unassigned")
    note: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(16), default="machine")
    assigned_by: Mapped[str | None] = mapped_column(String(64))


class MachineStateRecord(Base):
    """Machine state history from StateChanged events: the input of availability and OEE."""

    __tablename__ = "machine_states"
    __table_args__ = (Index("ix_machine_states_machine_ts", "machine_id", "ts_ns"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(String(64))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    previous: Mapped[str | None] = mapped_column(String(16))
    event_id: Mapped[str] = mapped_column(String(128), unique=True)
    # the state that ended at ts_ns: when it began and the Wh the machine used in it
    previous_since_ns: Mapped[int | None] = mapped_column(BigInteger)
    previous_energy_wh: Mapped[float | None] = mapped_column(Float)
    previous_energy_from_ns: Mapped[int | None] = mapped_column(BigInteger)


class Gap(Base):
    __tablename__ = "gaps"

    id: Mapped[int] = mapped_column(primary_key=True)
    machine_id: Mapped[str] = mapped_column(String(64), index=True)
    start_ns: Mapped[int] = mapped_column(BigInteger)
    end_ns: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    event_id: Mapped[str] = mapped_column(String(128), unique=True)


class EventRecord(Base):
    """Every wire event ever ingested; the unique event_id is what makes replays harmless."""

    __tablename__ = "events"

    event_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    machine_id: Mapped[str] = mapped_column(String(64))
    ts_ns: Mapped[int] = mapped_column(BigInteger)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    outcome: Mapped[str] = mapped_column(String(200))
    payload: Mapped[dict[str, Any]]


class MaterialLot(Base):
    __tablename__ = "material_lots"

    id: Mapped[int] = mapped_column(primary_key=True)
    lot_number: Mapped[str] = mapped_column(String(64), unique=True)
    material: Mapped[str] = mapped_column(String(200))
    supplier: Mapped[str | None] = mapped_column(String(200))
    received_quantity: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(16))
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class Consumption(Base):
    __tablename__ = "consumptions"

    id: Mapped[int] = mapped_column(primary_key=True)
    material_lot_id: Mapped[int] = mapped_column(ForeignKey("material_lots.id"), index=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"), index=True)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("operation_runs.id"))
    part_id: Mapped[int | None] = mapped_column(ForeignKey("parts.id"))
    quantity: Mapped[float] = mapped_column(Float)
    recorded_by: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(default=utcnow)
    material_lot: Mapped[MaterialLot] = relationship()


class ConfigEntry(Base):
    __tablename__ = "config"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[dict[str, Any]]


class AuditEntry(Base):
    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(primary_key=True)
    ts: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    username: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(200))
    entity: Mapped[str | None] = mapped_column(String(64))
    entity_id: Mapped[str | None] = mapped_column(String(64))
    status_code: Mapped[int] = mapped_column(Integer)
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any] | None]
    address: Mapped[str | None] = mapped_column(String(64))  # client address (IPv6 fits)
