"""Answers of the report and traceability endpoints: the shapes of reports.py and trace.py.

Times inside reports are ISO 8601 strings exactly as the report wrote them (``isoformat()``),
so the JSON the UI reads does not change.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from microfactory.mes.models import BatchStatus, OrderStatus, RunStatus

IsoTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


# --------------------------------------------------------------------------- progress
class OperationProgress(BaseModel):
    seq: int
    name: str
    total: int
    scrap: int
    good: int


class Progress(BaseModel):
    """Good parts out of the last routing operation; scrap counts at every operation."""

    quantity: int
    good: int
    scrap: int
    remaining: int
    percent: float
    operations: list[OperationProgress]


class OrderBatchProgress(Progress):
    batch_id: int


class BatchProgress(Progress):
    batch_id: int
    lot_number: str
    status: BatchStatus


class OrderProgress(BaseModel):
    order_id: int
    code: str
    status: OrderStatus
    quantity: int
    good: int
    scrap: int
    remaining: int
    percent: float
    batches: list[OrderBatchProgress]


# --------------------------------------------------------------------------- energy
class StateEnergy(BaseModel):
    state: str
    seconds: float
    unknown_s: float
    energy_wh: float
    energy_kwh: float
    co2e_kg: float
    outside_parts_wh: float
    outside_parts_kwh: float
    outside_parts_co2e_kg: float


class MachineEnergy(BaseModel):
    """The machines' counter energy over the runs, by state, and what no measured part carried."""

    known: bool
    energy_wh: float
    energy_kwh: float
    co2e_kg: float
    in_parts_wh: float
    outside_parts_wh: float
    outside_parts_kwh: float
    outside_parts_co2e_kg: float
    idle_setup_wh: float
    idle_setup_kwh: float
    idle_setup_co2e_kg: float
    unknown_s: float
    by_state: list[StateEnergy]


class EnergySummary(BaseModel):
    """The parts' own energy, with the machines' energy by state beside it."""

    parts_total: int
    parts_good: int
    parts_with_energy: int
    energy_wh: float
    energy_kwh: float
    co2e_kg: float
    wh_per_part: float | None
    wh_per_good_part: float | None
    idle_setup_energy_kwh: float | None
    note: str
    machine_energy: MachineEnergy


class EnergyTotals(EnergySummary):
    co2e_g_per_kwh: float


class OperationEnergy(EnergyTotals):
    seq: int
    operation: str


class BatchEnergy(EnergyTotals):
    batch_id: int
    lot_number: str
    wh_per_finished_part: float | None
    operations: list[OperationEnergy]


class OrderEnergy(EnergyTotals):
    order_id: int
    code: str
    wh_per_finished_part: float | None
    batches: list[BatchEnergy]


class EnergyBucket(EnergySummary):
    bucket_start: IsoTime


class ProductEnergy(BaseModel):
    product_id: int
    code: str
    bucket: Literal["hour", "day", "week", "month"]
    timezone: str
    co2e_g_per_kwh: float
    series: list[EnergyBucket]


# --------------------------------------------------------------------------- OEE, Pareto
class OeeWindow(BaseModel):
    start: IsoTime
    end: IsoTime


class Oee(BaseModel):
    """OEE of one machine in a window, with every input it used."""

    machine_id: str
    window: OeeWindow
    planned_time_s: float
    running_time_s: float
    state_data: bool
    total_parts: int
    good_parts: int
    ideal_time_s: float
    ideal_cycle_time_s: float | None
    availability: float | None
    performance: float | None
    quality: float | None
    oee: float | None


class OeeOverWindow(Oee):
    by: Literal["window"]


class ShiftOee(Oee):
    shift: str
    day: Annotated[str, Field(json_schema_extra={"format": "date"})]


class OeeByShift(BaseModel):
    machine_id: str
    by: Literal["shift"]
    shifts: list[ShiftOee]


OeeReport = Annotated[OeeOverWindow | OeeByShift, Field(discriminator="by")]


class ParetoRow(BaseModel):
    reason: str
    occurrences: int
    duration_s: float
    share: float
    cumulative_share: float


class DowntimePareto(BaseModel):
    start: IsoTime
    end: IsoTime
    machine_id: str | None
    rows: list[ParetoRow]


# --------------------------------------------------------------------------- traceability
class TraceOperation(BaseModel):
    seq: int
    name: str


class TraceSegment(BaseModel):
    start: IsoTime | None
    end: IsoTime | None
    operator: str | None


class TraceRun(BaseModel):
    run_id: int
    operation: TraceOperation
    machine_id: str
    status: RunStatus
    started_at: IsoTime | None
    ended_at: IsoTime | None
    operators: list[str]
    segments: list[TraceSegment]


class TraceConsumption(BaseModel):
    material_lot: str
    material: str
    supplier: str | None
    quantity: float
    unit: str
    run_id: int | None
    part_id: int | None
    recorded_by: str
    recorded_at: IsoTime | None


class RecordBatch(BaseModel):
    id: int
    lot_number: str
    quantity: int
    status: BatchStatus
    created_at: IsoTime | None
    completed_at: IsoTime | None


class RecordOrder(BaseModel):
    id: int
    code: str
    customer: str | None
    quantity: int
    status: OrderStatus


class RecordProduct(BaseModel):
    code: str
    name: str


class RecordScrap(BaseModel):
    run_id: int | None
    part_id: int | None
    quantity: int
    reason_code: str
    note: str | None
    recorded_by: str


class RecordDowntime(BaseModel):
    id: int
    machine_id: str
    start: IsoTime | None
    end: IsoTime | None
    reason_code: str
    note: str | None


class NoTelemetry(BaseModel):
    """The batch never ran: there is no time window to look its telemetry up in."""

    available: Literal[False]
    tag: dict[str, str]


class TelemetryWindow(BaseModel):
    """Where the batch's telemetry is in InfluxDB: its tags, time range and a Flux query."""

    available: Literal[True]
    measurement: str
    tag: dict[str, str]
    start: IsoTime
    end: IsoTime
    start_ns: int
    end_ns: int
    machines: list[str]
    flux: str


class BatchRecord(BaseModel):
    """Everything known about a batch: genealogy, counts, energy, scrap, downtime, telemetry."""

    batch: RecordBatch
    order: RecordOrder
    product: RecordProduct
    runs: list[TraceRun]
    materials: list[TraceConsumption]
    progress: Progress
    energy: BatchEnergy
    scrap: list[RecordScrap]
    downtime: list[RecordDowntime]
    telemetry: TelemetryWindow | NoTelemetry
    generated_at: IsoTime


class TracedPart(BaseModel):
    id: int
    serial: str | None
    machine_id: str
    good: bool
    quantity: int
    completed_at: IsoTime | None
    energy_wh: float | None
    cycle_time_s: float | None
    run: TraceRun | None
    materials: list[TraceConsumption]


class PartTrace(BaseModel):
    """Backward genealogy of a part: its own data and its batch's record (None: no batch)."""

    part: TracedPart
    batch: BatchRecord | None


class ForwardPart(BaseModel):
    id: int
    serial: str | None
    good: bool
    quantity: int


class ForwardBatch(BaseModel):
    batch_id: int
    lot_number: str
    order: str
    order_id: int
    customer: str | None
    product: str
    quantity_consumed: float
    specific_parts: list[int]
    parts: list[ForwardPart]


class MaterialTrace(BaseModel):
    """Forward genealogy of a material lot: every batch, order and part it reached."""

    material_lot: str
    material: str
    supplier: str | None
    received_quantity: float
    remaining_quantity: float
    unit: str
    batches: list[ForwardBatch]
    orders: list[str]
