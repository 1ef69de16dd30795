"""The MES model on SQLite and on PostgreSQL: migrations, workflow rules, ingestion, genealogy."""

from __future__ import annotations

import math
import os
import pwd
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from microfactory.contract import GapReported, PartCompleted, StateChanged
from microfactory.mes import db, trace, workflow
from microfactory.mes.errors import Conflict, Invalid, InvalidTransition
from microfactory.mes.ingest import ingest_event
from microfactory.mes.models import (
    Base,
    Batch,
    BatchStatus,
    Downtime,
    EventRecord,
    Gap,
    MachineStateRecord,
    MaterialLot,
    OperationRun,
    Order,
    OrderStatus,
    Part,
    Scrap,
)
from microfactory.mes.reports import batch_energy, order_energy, order_progress, product_energy
from microfactory.mes.seed import seed_demo
from microfactory.mes.settings import MesSettings
from microfactory.mes.timeutil import to_ns
from tests.helpers.postgres import PostgresServer

Event = StateChanged | PartCompleted | GapReported  # what ingest_event takes

S = 1_000_000_000


@pytest.fixture
def sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    engine = db.make_engine(db_url)
    db.migrate(engine)
    factory = db.session_factory(engine)
    with db.session_scope(factory) as s:
        seed_demo(s)
    yield factory
    engine.dispose()


def _order(s: Session, code: str = "SO-1001") -> Order:
    order = s.scalars(select(Order).where(Order.code == code)).one()
    return order


@pytest.mark.integration
def test_postgres_runs_unprivileged(postgres: PostgresServer) -> None:
    """Under root (CI) the server must run as the postgres user; otherwise as ourselves."""
    expected = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    assert postgres.whoami() == expected


def test_migrations_match_the_models(db_url: str) -> None:
    engine = db.make_engine(db_url)
    db.migrate(engine)
    db.migrate(engine)  # running it again at the next start is a no-op
    with engine.connect() as conn:
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata
        )
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_order_flow_and_the_rules_guarding_it(sessions: sessionmaker[Session]) -> None:
    with db.session_scope(sessions) as s:
        order = _order(s)
        workflow.release_order(s, order)
        assert order.status == OrderStatus.released
        (batch,) = order.batches
        assert batch.lot_number == "SO-1001-01" and batch.quantity == order.quantity
        with pytest.raises(InvalidTransition) as err:
            workflow.release_order(s, order)
        assert err.value.extra["current_state"] == "released"
        laser_op = order.product.operations[0]
        with pytest.raises(Invalid) as wrong_kind:
            workflow.start_run(s, batch, laser_op.id, "mill-1", "operator")
        assert wrong_kind.value.extra["field"] == "machine_id"
        run = workflow.start_run(s, batch, laser_op.id, "laser-1", "operator")
        assert order.status == OrderStatus.in_progress and batch.status == BatchStatus.in_progress
        with pytest.raises(Conflict):  # one batch at a time on a machine
            workflow.start_run(s, batch, laser_op.id, "laser-1", "operator")
        workflow.pause_run(s, run)
        workflow.resume_run(s, run, "operator")
        assert len(run.segments) == 2 and run.segments[0].ended_at is not None
        with pytest.raises(Conflict):
            workflow.cancel_order(s, order)


def test_times_are_utc_aware_on_every_backend(sessions: sessionmaker[Session]) -> None:
    at = datetime(2024, 5, 1, 8, 30, 15, 123456, tzinfo=UTC)
    with db.session_scope(sessions) as s:
        s.add(
            MaterialLot(
                lot_number="ML-T",
                material="x",
                received_quantity=1,
                unit="kg",
                received_at=at.astimezone(ZoneInfo("Europe/Berlin")),
            )
        )
    with sessions() as s:
        lot = s.scalars(select(MaterialLot).where(MaterialLot.lot_number == "ML-T")).one()
        assert lot.received_at == at and lot.received_at.tzinfo is not None


def test_unique_lot_numbers_are_enforced_by_the_database(sessions: sessionmaker[Session]) -> None:
    with sessions() as s:
        s.add(
            MaterialLot(lot_number="ML-S235-2405", material="dup", received_quantity=1, unit="kg")
        )
        with pytest.raises(IntegrityError):
            s.commit()


def _run_batch(s: Session) -> tuple[Batch, int, datetime]:
    order = _order(s)
    workflow.release_order(s, order)
    batch = order.batches[0]
    start = datetime.now(UTC) - timedelta(hours=1)
    run = workflow.start_run(s, batch, order.product.operations[0].id, "laser-1", "op1", start)
    workflow.consume(s, batch, "ML-S235-2405", 25.0, "op1")
    return batch, run.id, start


def test_events_are_attributed_by_time_and_idempotent(sessions: sessionmaker[Session]) -> None:
    with db.session_scope(sessions) as s:
        batch, run_id, start = _run_batch(s)
    t = to_ns(start)
    events: list[Event] = [
        StateChanged(event_id="e-s1", site="demo", machine="laser-1", ts_ns=t + 1, state="running"),
        PartCompleted(
            event_id="e-p1",
            site="demo",
            machine="laser-1",
            ts_ns=t + 20 * 10**9,
            part_count=1,
            good=True,
            energy_wh=60.0,
            cycle_time_s=20.0,
        ),
        PartCompleted(
            event_id="e-p2",
            site="demo",
            machine="laser-1",
            ts_ns=t + 41 * 10**9,
            part_count=2,
            good=False,
            energy_wh=58.0,
            cycle_time_s=21.0,
        ),
        StateChanged(
            event_id="e-s2",
            site="demo",
            machine="laser-1",
            ts_ns=t + 50 * 10**9,
            state="fault",
            previous="running",
        ),
        # before the run started: the part belongs to no batch
        PartCompleted(
            event_id="e-p0",
            site="demo",
            machine="laser-1",
            ts_ns=t - 10**9,
            part_count=0,
            good=True,
            energy_wh=1.0,
        ),
        PartCompleted(event_id="e-x", site="other", machine="laser-1", ts_ns=t + 2, part_count=9),
    ]
    with db.session_scope(sessions) as s:
        outcomes = [ingest_event(s, e, "demo").outcome for e in events]
    assert outcomes[1] == f"part on run {run_id}" and outcomes[2].endswith(", scrap")
    assert "downtime" in outcomes[3] and "unattributed" in outcomes[4]
    assert outcomes[5].startswith("ignored: site")
    with db.session_scope(sessions) as s:  # the replay after a reconnect
        again = [ingest_event(s, e, "demo") for e in events]
    assert all(r.duplicate for r in again)
    with sessions() as s:
        parts = s.scalars(select(Part).where(Part.run_id == run_id)).all()
        assert sorted(p.energy_wh or 0 for p in parts) == [58.0, 60.0]
        assert s.scalars(select(Scrap)).one().reason_code == "machine_reported"
        assert s.scalars(select(Downtime)).one().reason_code == "unassigned"
        b = s.get(Batch, batch.id)
        assert b is not None
        progress = order_progress(s, b.order)
        assert progress["scrap"] == 1
        energy = batch_energy(s, b, MesSettings(demo=True))
        assert energy["energy_wh"] == pytest.approx(118.0)
        assert energy["wh_per_good_part"] == pytest.approx(118.0)


def test_genealogy_forward_and_backward(sessions: sessionmaker[Session]) -> None:
    with db.session_scope(sessions) as s:
        batch, _run_id, start = _run_batch(s)
        ingest_event(
            s,
            PartCompleted(
                event_id="g-1",
                site="demo",
                machine="laser-1",
                ts_ns=to_ns(start) + 10**9,
                part_count=1,
                good=True,
                energy_wh=5.0,
            ),
            "demo",
        )
    with sessions() as s:
        forward = trace.material_forward(s, "ML-S235-2405")
        (entry,) = forward["batches"]
        assert entry["lot_number"] == batch.lot_number and entry["order"] == "SO-1001"
        assert entry["quantity_consumed"] == 25.0
        part = s.scalars(select(Part).where(Part.event_id == "g-1")).one()
        back = trace.part_trace(s, part, MesSettings(demo=True))
        assert back["part"]["run"]["machine_id"] == "laser-1"
        assert back["part"]["run"]["operators"] == ["op1"]
        assert [m["material_lot"] for m in back["batch"]["materials"]] == ["ML-S235-2405"]
        assert back["batch"]["telemetry"]["tag"]["batch"] == batch.lot_number
        with pytest.raises(Conflict):  # a lot cannot give more than it received
            workflow.consume(s, s.get(Batch, batch.id), "ML-S235-2405", 10_000.0, "op1")  # type: ignore[arg-type]


def test_back_dated_start_and_end_move_parts_to_the_right_run(
    sessions: sessionmaker[Session],
) -> None:
    """Events are attributed on arrival; an operator's back-dated times re-attribute them."""
    base = datetime.now(UTC) - timedelta(hours=2)
    t = to_ns(base)
    with db.session_scope(sessions) as s:
        order = _order(s)
        workflow.release_order(s, order)
        for i, minute in enumerate((5, 20, 40)):
            ingest_event(
                s,
                PartCompleted(
                    event_id=f"r-{i}",
                    site="demo",
                    machine="laser-1",
                    ts_ns=t + minute * 60 * S,
                    part_count=i + 1,
                    good=i != 1,
                ),
                "demo",
            )
        assert s.scalars(select(Part).where(Part.run_id.is_not(None))).all() == []
        run = workflow.start_run(
            s, order.batches[0], order.product.operations[0].id, "laser-1", "op1", base
        )
        assert len(s.scalars(select(Part).where(Part.run_id == run.id)).all()) == 3
        workflow.complete_run(s, run, base + timedelta(minutes=30))
        kept = s.scalars(select(Part).where(Part.run_id == run.id)).all()
        assert sorted(p.event_id or "" for p in kept) == ["r-0", "r-1"]
        scrap = s.scalars(select(Scrap)).one()
        assert scrap.run_id == run.id  # the machine's scrap moved with its part


def test_state_energy_is_attributed_to_the_run_and_adds_up(
    sessions: sessionmaker[Session],
) -> None:
    """Idle and setup energy in a batch is shown by state; parts + the rest = counter energy."""
    with db.session_scope(sessions) as s:
        batch, run_id, start = _run_batch(s)
    t = to_ns(start)

    def state(
        i: int, at_s: int, new: str, old: str | None, since_s: int | None, wh: float | None
    ) -> StateChanged:
        return StateChanged(
            event_id=f"se-{i}",
            site="demo",
            machine="laser-1",
            ts_ns=t + at_s * S,
            state=new,
            previous=old,
            previous_since_ns=None if since_s is None else t + since_s * S,
            previous_energy_wh=wh,
        )

    def part(i: int, at_s: int, wh: float | None) -> PartCompleted:
        return PartCompleted(
            event_id=f"sp-{i}",
            site="demo",
            machine="laser-1",
            ts_ns=t + at_s * S,
            part_count=i,
            good=True,
            energy_wh=wh,
        )

    # 1 Wh/s in setup and running, 0.2 Wh/s idle; the run is [t, t + 100 s)
    events: list[Event] = [
        state(1, -10, "setup", None, None, None),
        part(0, -5, None),  # before the run: no batch, but it opens the next part's window
        state(2, 10, "running", "setup", -10, 20.0),
        part(1, 30, 35.0),  # its window (-5, 30] reaches 5 s before the run
        part(2, 60, 30.0),
        state(3, 60, "idle", "running", 10, 50.0),
        state(4, 120, "running", "idle", 60, 12.0),
    ]
    with db.session_scope(sessions) as s:
        for e in events:
            ingest_event(s, e, "demo")
        run = s.get(OperationRun, run_id)
        assert run is not None
        workflow.complete_run(s, run, start + timedelta(seconds=100))
    with db.session_scope(sessions) as s:  # a replay changes nothing
        assert all(ingest_event(s, e, "demo").duplicate for e in events)
    with sessions() as s:
        rec = s.scalars(
            select(MachineStateRecord).where(MachineStateRecord.event_id == "se-3")
        ).one()
        assert rec.previous_since_ns == t + 10 * S and rec.previous_energy_wh == 50.0
        b = s.get(Batch, batch.id)
        assert b is not None
        settings = MesSettings(demo=True)
        energy = batch_energy(s, b, settings)
        assert energy["energy_wh"] == pytest.approx(65.0)  # the parts' own energy, as before
        machine = energy["machine_energy"]
        by_state = {r["state"]: r for r in machine["by_state"]}
        assert {k: v["energy_wh"] for k, v in by_state.items()} == pytest.approx(
            {"running": 50.0, "idle": 8.0, "setup": 10.0}
        )
        assert by_state["idle"]["seconds"] == pytest.approx(40.0)
        assert {k: v["outside_parts_wh"] for k, v in by_state.items()} == pytest.approx(
            {"running": 0.0, "idle": 8.0, "setup": 0.0}
        )
        assert machine["energy_wh"] == pytest.approx(68.0)  # the counter over the run
        # what the parts carried inside the run + what no part carried = the counter
        assert machine["in_parts_wh"] == pytest.approx(65.0 - 5.0)
        assert machine["in_parts_wh"] + machine["outside_parts_wh"] == pytest.approx(68.0)
        assert energy["idle_setup_energy_kwh"] == pytest.approx(0.018)
        assert by_state["idle"]["co2e_kg"] == pytest.approx(0.008 * settings.co2e_g_per_kwh / 1000)
        assert machine["unknown_s"] == 0.0
        assert energy["operations"][0]["machine_energy"]["energy_wh"] == pytest.approx(68.0)
        order = order_energy(s, b.order, settings)
        assert order["machine_energy"]["energy_wh"] == pytest.approx(68.0)
        assert order["idle_setup_energy_kwh"] == pytest.approx(0.018)
        series = product_energy(
            s,
            b.order.product_id,
            start - timedelta(days=1),
            start + timedelta(days=1),
            "hour",
            settings,
        )
        assert sum(r["machine_energy"]["energy_wh"] for r in series) == pytest.approx(68.0)
        assert sum(r["energy_wh"] for r in series) == pytest.approx(65.0)


def test_implausible_events_are_kept_with_the_reason_and_nothing_overflows(
    sessions: sessionmaker[Session],
) -> None:
    """A gap ending before it starts is rejected in the event log; a part with a NaN, negative
    or absurd energy still counts, its energy unknown; replays stay duplicates."""
    with db.session_scope(sessions) as s:
        batch, run_id, start = _run_batch(s)
    t = to_ns(start)

    def part(i: int, wh: float, ct: float | None = None) -> PartCompleted:
        return PartCompleted(
            event_id=f"bad-p{i}",
            site="demo",
            machine="laser-1",
            ts_ns=t + i * S,
            part_count=i,
            good=True,
            energy_wh=wh,
            cycle_time_s=ct,
        )

    events: list[Event] = [
        GapReported(
            event_id="bad-gap",
            site="demo",
            machine="laser-1",
            ts_ns=t + S,
            start_ns=t + 5 * S,
            reason="source lost",
        ),
        part(1, 1e308),
        part(2, 1e308),
        part(3, float("nan"), float("inf")),
        part(4, -5.0),
        part(5, 40.0, 12.0),
        StateChanged(
            event_id="bad-s1",
            site="demo",
            machine="laser-1",
            ts_ns=t + 10 * S,
            state="idle",
            previous="running",
            previous_since_ns=t,
            previous_energy_wh=1e308,
        ),
    ]
    with db.session_scope(sessions) as s:
        results = [ingest_event(s, e, "demo") for e in events]
    gap, huge, _, nan, negative, fine, state = results
    assert gap.rejected and gap.outcome.startswith("rejected: start_ns: the gap starts")
    assert huge.outcome.startswith(f"part on run {run_id}; unknown energy_wh: 1e+308 Wh")
    assert "energy_wh: nan" in nan.outcome and "cycle_time_s: inf" in nan.outcome
    assert "energy_wh: -5.0 Wh" in negative.outcome
    assert fine.outcome == f"part on run {run_id}"
    assert "unknown previous_energy_wh" in state.outcome
    with db.session_scope(sessions) as s:  # the replay changes nothing
        assert all(ingest_event(s, e, "demo").duplicate for e in events)
    with sessions() as s:
        assert s.scalars(select(Gap)).all() == []
        rows = {r.event_id: r for r in s.scalars(select(EventRecord))}
        assert rows["bad-gap"].outcome == gap.outcome  # the dead letter keeps why and what
        assert rows["bad-p3"].payload["energy_wh"] == "nan"
        parts = s.scalars(select(Part).where(Part.run_id == run_id)).all()
        assert len(parts) == 5  # every part counts, whatever its energy said
        assert sorted(p.energy_wh for p in parts if p.energy_wh is not None) == [40.0]
        assert all(p.cycle_time_s in (None, 12.0) for p in parts)
        assert s.scalars(select(MachineStateRecord)).one().previous_energy_wh is None
        # a row stored before these checks must not overflow the totals either
        s.get(Part, parts[0].id).energy_wh = 1e308  # type: ignore[union-attr]
        s.flush()
        energy = batch_energy(s, s.get(Batch, batch.id), MesSettings(demo=True))  # type: ignore[arg-type]
        assert energy["energy_wh"] == 40.0 and energy["parts_with_energy"] == 1
        assert math.isfinite(energy["machine_energy"]["energy_wh"])


def test_operator_times_before_the_run_are_refused(sessions: sessionmaker[Session]) -> None:
    with db.session_scope(sessions) as s:
        _batch, run_id, start = _run_batch(s)
        run = s.get(OperationRun, run_id)
        assert run is not None
        with pytest.raises(Invalid) as err:
            workflow.record_parts(s, run, 2, None, start - timedelta(minutes=1))
        assert err.value.extra["field"] == "at" and "before the run's start" in err.value.message
        workflow.record_parts(s, run, 2, None, start + timedelta(minutes=1))
        workflow.pause_run(s, run, start + timedelta(minutes=30))
        with pytest.raises(Invalid) as err:
            workflow.complete_run(s, run, start + timedelta(minutes=10))
        assert err.value.extra["field"] == "at" and "before the pause" in err.value.message
        assert workflow.complete_run(s, run, start + timedelta(minutes=40)).status == "done"
