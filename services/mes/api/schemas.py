"""API payloads: Create / Update / Public per entity, bounded so the database never chokes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from microfactory.mes.models import BatchStatus, OrderStatus, ReasonKind, Role, RunStatus

MAX_INT = 2**31 - 1
Code = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]*$")
]
# A machine id is a topic level on the wire (microfactory.contract): no '/', '+' or '#'
MachineId = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
]
# Names travel in the machine context and into InfluxDB tags: no control characters
Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f-\x9f]*$")
]
Text = Annotated[str, StringConstraints(max_length=2000, pattern=r"^[^\x00]*$")]
Qty = Annotated[int, Field(ge=1, le=1_000_000)]
Id = Annotated[int, Field(ge=1, le=MAX_INT)]
PosFloat = Annotated[float, Field(gt=0, le=1e12)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]

# Times the MES can store and compute with: UTC nanoseconds fit an int64 until 2262, and a
# year-1 or year-9999 time with an offset overflows ``datetime`` when turned into UTC.
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(2200, 1, 1, tzinfo=UTC)


def _in_range(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError("must lie between 1970-01-01 and 2200-01-01 UTC")
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_in_range)]

T = TypeVar("T")


class In(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


# --------------------------------------------------------------------------- errors
class Problem(BaseModel):
    """A refused request: what went wrong and, where it applies, the entity, state or field."""

    detail: str
    entity: str | None = Field(default=None, description="404: the kind of thing not found")
    id: str | None = Field(default=None, description="404/409: its id or lot number")
    current_state: str | None = Field(default=None, description="409: the state it is in")
    action: str | None = Field(default=None, description="409: the refused transition")
    field: str | None = Field(default=None, description="409/422: the offending field")


class FieldProblem(BaseModel):
    """One invalid value as FastAPI reports it: where (``loc``), why (``msg``), which kind."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationProblem(BaseModel):
    """422: FastAPI's list of invalid values, or one domain rule naming its ``field``."""

    detail: list[FieldProblem] | str
    field: str | None = None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no or wrong credentials"},
    403: {"model": Problem, "description": "role too low, or a demo password outside demo mode"},
    404: {"model": Problem, "description": "unknown id or lot number (`entity`, `id`)"},
    409: {
        "model": Problem,
        "description": "invalid transition or clash with the current state "
        "(`current_state`, `action` or `field`)",
    },
    413: {"model": Problem, "description": "request body larger than `max_body_bytes`"},
    422: {"model": ValidationProblem, "description": "invalid value (`detail[].loc` or `field`)"},
    429: {"model": Problem, "description": "too many failed logins: wait `Retry-After` seconds"},
}


# --------------------------------------------------------------------------- auth & users
class TokenRequest(In):
    username: Name
    password: Password


class TokenResponse(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int
    role: Role


class UserCreate(In):
    username: Code
    password: Password
    role: Role
    full_name: Name | None = None


class UserUpdate(In):
    password: Password | None = None
    role: Role | None = None
    full_name: Name | None = None
    active: bool | None = None


class UserPublic(Out):
    id: int
    username: str
    full_name: str | None
    role: Role
    active: bool
    created_at: datetime


# --------------------------------------------------------------------------- machines
class MachineCreate(In):
    id: MachineId
    kind: Code
    name: Name | None = None
    nominal_power_w: PosFloat | None = None
    ideal_cycle_time_s: PosFloat | None = None


class MachineUpdate(In):
    kind: Code | None = None
    name: Name | None = None
    nominal_power_w: PosFloat | None = None
    ideal_cycle_time_s: PosFloat | None = None


class MachinePublic(Out):
    id: str
    kind: str
    name: str | None
    nominal_power_w: float | None
    ideal_cycle_time_s: float | None
    state: str | None
    state_since: datetime | None


class MachineStatePublic(Out):
    ts_ns: int
    state: str
    previous: str | None
    event_id: str


# --------------------------------------------------------------------------- products
class OperationIn(In):
    seq: Annotated[int, Field(ge=1, le=10_000)]
    name: Name
    machine_kind: Code
    ideal_cycle_time_s: PosFloat


class OperationPublic(Out):
    id: int
    seq: int
    name: str
    machine_kind: str
    ideal_cycle_time_s: float


class ProductCreate(In):
    code: Code
    name: Name
    description: Text | None = None
    operations: list[OperationIn] = Field(default_factory=list, max_length=100)


class ProductUpdate(In):
    name: Name | None = None
    description: Text | None = None


class RoutingUpdate(In):
    operations: list[OperationIn] = Field(min_length=1, max_length=100)


class ProductPublic(Out):
    id: int
    code: str
    name: str
    description: str | None
    operations: list[OperationPublic]


# --------------------------------------------------------------------------- orders & batches
class OrderCreate(In):
    code: Code
    product_id: Id
    quantity: Qty
    due_date: Instant | None = None
    priority: Annotated[int, Field(ge=0, le=1000)] = 0
    customer: Name | None = None


class OrderUpdate(In):
    quantity: Qty | None = None
    due_date: Instant | None = None
    priority: Annotated[int, Field(ge=0, le=1000)] | None = None
    customer: Name | None = None


class BatchPublic(Out):
    id: int
    lot_number: str
    order_id: int
    quantity: int
    status: BatchStatus
    created_at: datetime
    completed_at: datetime | None


class OrderPublic(Out):
    id: int
    code: str
    product_id: int
    quantity: int
    due_date: datetime | None
    priority: int
    customer: str | None
    status: OrderStatus
    created_at: datetime
    released_at: datetime | None
    completed_at: datetime | None
    batches: list[BatchPublic]


class BatchCreate(In):
    quantity: Qty
    lot_number: Code | None = None


# --------------------------------------------------------------------------- runs
class At(In):
    at: Instant | None = Field(default=None, description="back-dated action time; now if unset")


class RunStart(At):
    operation_id: Id
    machine_id: Code


class SegmentPublic(Out):
    started_at: datetime
    ended_at: datetime | None
    operator: str | None


class RunPublic(Out):
    id: int
    batch_id: int
    operation_id: int
    machine_id: str
    operator: str | None
    status: RunStatus
    started_at: datetime
    ended_at: datetime | None
    segments: list[SegmentPublic]


class PartsIn(At):
    quantity: Qty = 1
    serials: list[Code] | None = Field(default=None, max_length=10_000)


class PartPublic(Out):
    id: int
    run_id: int | None
    batch_id: int | None
    machine_id: str
    serial: str | None
    quantity: int
    good: bool
    completed_at: datetime
    energy_wh: float | None
    cycle_time_s: float | None
    source: str
    event_id: str | None


class ScrapIn(In):
    quantity: Qty = 1
    reason_code: Code
    note: Text | None = None
    part_id: Id | None = None


class ScrapPublic(Out):
    id: int
    run_id: int | None
    part_id: int | None
    machine_id: str
    quantity: int
    reason_code: str
    note: str | None
    recorded_by: str
    recorded_at: datetime


# --------------------------------------------------------------------------- downtime & reasons
class DowntimeCreate(In):
    machine_id: Code
    started_at: Instant
    ended_at: Instant | None = None
    reason_code: Code
    note: Text | None = None


class DowntimeReasonIn(In):
    reason_code: Code
    note: Text | None = None


class DowntimePublic(Out):
    id: int
    machine_id: str
    run_id: int | None
    started_at: datetime
    ended_at: datetime | None
    state: str | None
    reason_code: str
    note: str | None
    source: str
    assigned_by: str | None


class ReasonCodeIn(In):
    kind: ReasonKind
    code: Code
    description: Name
    planned: bool = False


class ReasonCodePublic(Out):
    id: int
    kind: ReasonKind
    code: str
    description: str
    planned: bool


# --------------------------------------------------------------------------- materials
class MaterialLotCreate(In):
    lot_number: Code
    material: Name
    supplier: Name | None = None
    received_quantity: PosFloat
    unit: Annotated[str, StringConstraints(min_length=1, max_length=16, pattern=r"^[^\x00]*$")]
    received_at: Instant | None = None


class MaterialLotPublic(Out):
    id: int
    lot_number: str
    material: str
    supplier: str | None
    received_quantity: float
    unit: str
    received_at: datetime
    remaining_quantity: float | None = None


class ConsumeIn(In):
    material_lot: Code
    quantity: PosFloat
    run_id: Id | None = None
    part_id: Id | None = None


class ConsumptionPublic(Out):
    id: int
    material_lot_id: int
    batch_id: int
    run_id: int | None
    part_id: int | None
    quantity: float
    recorded_by: str
    recorded_at: datetime


# --------------------------------------------------------------------------- events, audit, config
class EventPublic(Out):
    event_id: str
    kind: str
    machine_id: str
    ts_ns: int
    received_at: datetime
    outcome: str
    payload: dict[str, Any]


class IngestResponse(BaseModel):
    event_id: str
    outcome: str
    duplicate: bool
    part_id: int | None
    run_id: int | None


class GapPublic(Out):
    id: int
    machine_id: str
    start_ns: int
    end_ns: int
    reason: str
    event_id: str


class AuditPublic(Out):
    id: int
    ts: datetime
    username: str
    action: str
    entity: str | None
    entity_id: str | None
    status_code: int
    result: str
    detail: dict[str, Any] | None
    address: str | None = Field(default=None, description="client address of the request")


class ConfigPublic(BaseModel):
    site: str
    co2e_g_per_kwh: float
    timezone: str
    shifts: list[dict[str, str]]
    demo: bool


class ConfigUpdate(In):
    co2e_g_per_kwh: Annotated[float, Field(ge=0, le=5000)] | None = None


class Health(BaseModel):
    status: Literal["ok"]
    database: Literal["ok"]
    mqtt: Literal["connected", "disconnected", "disabled"]
    site: str
    version: str
