"""Ingestion of the gateway's machine events; idempotent by event_id, attributed by ts_ns."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from microfactory.contract import GapReported, PartCompleted, StateChanged
from microfactory.mes.errors import Invalid
from microfactory.mes.models import (
    Downtime,
    EventRecord,
    Gap,
    Machine,
    MachineStateRecord,
    Part,
    RunSegment,
    Scrap,
)
from microfactory.mes.timeutil import from_ns

log = logging.getLogger(__name__)

DOWN_STATES = frozenset({"fault", "off"})
MACHINE_REPORTED = "machine_reported"
MAX_NS = 2**62
# Beyond these a value is a fault of the meter or the sender, not a measurement: a GWh is more
# than a large machine uses in a month, and sums of such values overflow a report's totals.
MAX_EVENT_WH = 1e9
MAX_CYCLE_TIME_S = 1e7
STORED_STATE_CHARS = 16  # MachineStateRecord.state / previous, Machine.state


@dataclass(slots=True)
class IngestResult:
    event_id: str
    outcome: str
    duplicate: bool = False
    part_id: int | None = None
    run_id: int | None = None
    downtime_ids: list[int] = field(default_factory=list)
    rejected: bool = False


def plausible(value: float | None, limit: float) -> float | None:
    """A measured value if it is a finite number in [0, limit]; None (unknown) otherwise."""
    if value is None or not math.isfinite(value) or not 0 <= value <= limit:
        return None
    return value


def _implausible(field_name: str, value: float | None, limit: float, unit: str) -> str | None:
    if value is None or plausible(value, limit) is not None:
        return None
    return f"{field_name}: {value!r} {unit} is not a measurement (expected 0 to {limit:g} {unit})"


def _json_safe(payload: dict[str, object]) -> dict[str, object]:
    """The payload as received, NaN and infinities spelled out (JSON, and PostgreSQL, has none)."""
    return {
        k: repr(v) if isinstance(v, float) and not math.isfinite(v) else v
        for k, v in payload.items()
    }


def refusal(event: StateChanged | PartCompleted | GapReported) -> tuple[str, str] | None:
    """Why an event cannot be applied at all, as (field, reason); None when it can."""
    if isinstance(event, GapReported) and event.start_ns > event.ts_ns:
        return "start_ns", f"the gap starts ({event.start_ns}) after it ends (ts_ns {event.ts_ns})"
    if isinstance(event, StateChanged):
        # the wire allows longer text; the MES keeps states in String(16) columns, and a row
        # that PostgreSQL refuses would be redelivered forever
        for name, value in (("state", event.state), ("previous", event.previous)):
            if value is not None and len(value) > STORED_STATE_CHARS:
                return name, f"{len(value)} characters, the MES keeps at most {STORED_STATE_CHARS}"
    return None


def value_problems(event: StateChanged | PartCompleted | GapReported) -> list[tuple[str, str]]:
    """Measured values that are not measurements (NaN, infinite, negative, absurd)."""
    checks: list[tuple[str, float | None, float, str]] = []
    if isinstance(event, PartCompleted):
        checks = [
            ("energy_wh", event.energy_wh, MAX_EVENT_WH, "Wh"),
            ("cycle_time_s", event.cycle_time_s, MAX_CYCLE_TIME_S, "s"),
        ]
    elif isinstance(event, StateChanged):
        checks = [("previous_energy_wh", event.previous_energy_wh, MAX_EVENT_WH, "Wh")]
    return [
        (name, problem)
        for name, value, limit, unit in checks
        if (problem := _implausible(name, value, limit, unit)) is not None
    ]


def segment_at(session: Session, machine_id: str, ts_ns: int) -> RunSegment | None:
    """The run segment active on a machine at a source time (start inclusive, end exclusive)."""
    ts = from_ns(ts_ns)
    return session.scalars(
        select(RunSegment)
        .where(
            RunSegment.machine_id == machine_id,
            RunSegment.started_at <= ts,
            (RunSegment.ended_at.is_(None)) | (RunSegment.ended_at > ts),
        )
        .order_by(RunSegment.started_at.desc())
    ).first()


def ingest_event(
    session: Session,
    event: StateChanged | PartCompleted | GapReported,
    site: str,
    *,
    strict: bool = False,
) -> IngestResult:
    """Apply one event inside the caller's transaction; a replayed event_id changes nothing.

    An event that cannot be applied (a gap ending before it starts) is kept in the event log
    as ``rejected: <field>: <reason>``; a part or state change carrying a value that is not a
    measurement (NaN, negative, absurd energy) is applied with that value unknown, and the
    outcome says so. ``strict`` (a person posting over HTTP) raises :class:`Invalid` instead.
    """
    start_ns = event.start_ns if isinstance(event, GapReported) else event.ts_ns
    if not (0 <= event.ts_ns < MAX_NS and 0 <= start_ns < MAX_NS):  # event_id: the contract
        return IngestResult(event.event_id, "rejected: ts_ns out of range", rejected=True)
    if session.get(EventRecord, event.event_id) is not None:
        return IngestResult(event.event_id, "duplicate", duplicate=True)
    refused = refusal(event)
    problems = value_problems(event)
    if strict and (refused or problems):
        raise Invalid(*(refused or problems[0]))
    record = EventRecord(
        event_id=event.event_id,
        kind=event.kind,
        machine_id=event.machine,
        ts_ns=event.ts_ns,
        outcome="pending",
        payload=_json_safe(event.model_dump(mode="json")),
    )
    try:
        with session.begin_nested():
            session.add(record)
            session.flush()
    except IntegrityError:
        return IngestResult(event.event_id, "duplicate", duplicate=True)

    result = IngestResult(event.event_id, "stored")
    machine = session.get(Machine, event.machine)
    if refused is not None:
        result.outcome = f"rejected: {refused[0]}: {refused[1]}"
        result.rejected = True
    elif event.site != site:
        result.outcome = f"ignored: site {event.site!r} is not {site!r}"
    elif machine is None:
        result.outcome = f"ignored: unknown machine {event.machine!r}"
    elif isinstance(event, PartCompleted):
        _part(session, event, result)
    elif isinstance(event, StateChanged):
        _state(session, machine, event, result)
    else:
        session.add(
            Gap(
                machine_id=event.machine,
                start_ns=event.start_ns,
                end_ns=event.ts_ns,
                reason=event.reason,
                event_id=event.event_id,
            )
        )
        result.outcome = "gap stored"
    if problems and not result.rejected and not result.outcome.startswith("ignored"):
        result.outcome += "; unknown " + "; ".join(p for _, p in problems)
    record.outcome = result.outcome[:200]
    session.flush()
    if result.rejected or problems or result.outcome.startswith("ignored"):
        log.warning("event %s on %s %s", event.event_id, event.machine, result.outcome)
    return result


def _part(session: Session, event: PartCompleted, result: IngestResult) -> None:
    segment = segment_at(session, event.machine, event.ts_ns)
    run = segment.run if segment else None
    good = event.good is not False
    part = Part(
        run_id=run.id if run else None,
        batch_id=run.batch_id if run else None,
        machine_id=event.machine,
        quantity=1,
        good=good,
        completed_at=from_ns(event.ts_ns),
        energy_wh=plausible(event.energy_wh, MAX_EVENT_WH),
        cycle_time_s=plausible(event.cycle_time_s, MAX_CYCLE_TIME_S),
        source="machine",
        event_id=event.event_id,
    )
    session.add(part)
    session.flush()
    if not good:
        session.add(
            Scrap(
                run_id=part.run_id,
                part_id=part.id,
                machine_id=event.machine,
                quantity=1,
                reason_code=MACHINE_REPORTED,
                recorded_by="machine",
                recorded_at=from_ns(event.ts_ns),
            )
        )
    result.part_id = part.id
    result.run_id = part.run_id
    result.outcome = (f"part on run {run.id}" if run else "part outside any run (unattributed)") + (
        "" if good else ", scrap"
    )


def _previous_energy(event: StateChanged) -> tuple[int | None, float | None, int | None]:
    """The ended state's start, Wh and their start, kept only when they make an interval."""
    since = event.previous_since_ns
    if since is None or not 0 <= since < event.ts_ns:
        return None, None, None
    wh = plausible(event.previous_energy_wh, MAX_EVENT_WH)
    if wh is None:
        return since, None, None
    from_ns = event.previous_energy_from_ns
    if from_ns is not None and not since <= from_ns < event.ts_ns:
        return since, None, None
    return since, wh, from_ns


def _state(session: Session, machine: Machine, event: StateChanged, result: IngestResult) -> None:
    ts = from_ns(event.ts_ns)
    since, wh, energy_from = _previous_energy(event)
    session.add(
        MachineStateRecord(
            machine_id=machine.id,
            ts_ns=event.ts_ns,
            state=event.state,
            previous=event.previous,
            event_id=event.event_id,
            previous_since_ns=since,
            previous_energy_wh=wh,
            previous_energy_from_ns=energy_from,
        )
    )
    if machine.state_since is None or ts >= machine.state_since:
        machine.state = event.state
        machine.state_since = ts
    open_rows = session.scalars(
        select(Downtime).where(
            Downtime.machine_id == machine.id,
            Downtime.ended_at.is_(None),
            Downtime.source == "machine",
        )
    ).all()
    if event.state in DOWN_STATES:
        segment = segment_at(session, machine.id, event.ts_ns)
        if segment is not None and not open_rows:
            row = Downtime(
                machine_id=machine.id,
                run_id=segment.run_id,
                started_at=ts,
                state=event.state,
                reason_code="unassigned",
                source="machine",
            )
            session.add(row)
            session.flush()
            result.downtime_ids.append(row.id)
            result.outcome = f"state {event.state}, downtime {row.id} opened"
            return
    else:
        for row in open_rows:
            if ts > row.started_at:
                row.ended_at = ts
                result.downtime_ids.append(row.id)
        if result.downtime_ids:
            result.outcome = f"state {event.state}, downtime closed"
            return
    result.outcome = f"state {event.state}"
