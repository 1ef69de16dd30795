"""The audit trail an assessor accepts (IEC 62443-4-2 CR 2.8/2.9): every authentication failure
with the user name tried and the address, every write with actor, address, object and result,
bounded against floods, pruned by retention, and a capacity warning before it fills."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text

from microfactory.mes import db
from microfactory.mes.audit import FLOOD_ROWS, FLOOD_WINDOW_S, AuditRow, AuditTrail
from microfactory.mes.models import AuditEntry
from tests.mes.conftest import ADMIN, MANAGER, MakeClient

API = "/api/v1"
OLD = datetime(2026, 1, 1, tzinfo=UTC).replace(tzinfo=None)  # raw SQL: naive UTC, as stored


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _trail(url: str, **kw: object) -> tuple[AuditTrail, object]:
    engine = db.make_engine(url)
    db.migrate(engine)
    sessions = db.session_factory(engine)
    values: dict[str, object] = {"retention_days": 365, "max_rows": 1000} | kw
    return AuditTrail(sessions, **values), sessions  # type: ignore[arg-type]


def _count(sessions: object) -> int:
    with sessions() as session:  # type: ignore[operator]
        return int(session.scalar(select(func.count()).select_from(AuditEntry)))


def _refusal(i: int, address: str = "10.0.0.9") -> AuditRow:
    return AuditRow(
        username=f"guess-{i % 7}",
        action="GET /api/v1/orders",
        status_code=401,
        result="refused",
        address=address,
        entity="auth",
        detail={"auth": "password"},
    )


def test_a_flood_of_refusals_becomes_a_few_rows_and_one_summary(sqlite_url: str) -> None:
    clock = FakeClock()
    trail, sessions = _trail(sqlite_url, clock=clock)
    for i in range(300):
        trail.refusal(_refusal(i, "10.0.0.9" if i % 3 else "10.0.0.8"))
    trail.drain()
    assert _count(sessions) == FLOOD_ROWS
    trail.flush()  # the window has not ended: nothing yet
    assert _count(sessions) == FLOOD_ROWS
    clock.now += FLOOD_WINDOW_S
    trail.flush()
    assert _count(sessions) == FLOOD_ROWS + 1
    with sessions() as session:  # type: ignore[operator]
        summary = session.scalars(select(AuditEntry).where(AuditEntry.result == "suppressed")).one()
    assert summary.detail is not None
    assert summary.detail["suppressed"] == 300 - FLOOD_ROWS
    assert summary.detail["by_address"] == {"10.0.0.9": 180, "10.0.0.8": 90}
    assert summary.detail["usernames"] == 7 and summary.address == "10.0.0.9"
    # a new window records in full again; its first row writes the old window's summary
    trail.refusal(_refusal(1))
    trail.drain()
    assert _count(sessions) == FLOOD_ROWS + 2
    assert trail.metrics()["suppressed_total"] == 300 - FLOOD_ROWS


def test_rows_are_cut_to_their_columns(sqlite_url: str) -> None:
    trail, sessions = _trail(sqlite_url)
    trail.write(
        AuditRow(
            username="u" * 500,
            action="POST /x" * 100,
            status_code=200,
            result="ok",
            address="a" * 100,
            entity_id="e" * 128,
            detail={"note": "n" * 10_000},
        )
    )
    with sessions() as session:  # type: ignore[operator]
        row = session.scalars(select(AuditEntry)).one()
    assert len(row.username) == 64 and len(row.entity_id or "") == 64
    assert row.detail is not None and len(row.detail["note"]) == 200


def test_retention_prunes_at_start(sqlite_url: str, make_client: MakeClient) -> None:
    engine = db.make_engine(sqlite_url)
    db.migrate(engine)
    with db.session_scope(db.session_factory(engine)) as session:
        for days in (400, 366, 10):
            session.add(
                AuditEntry(
                    ts=datetime.now(UTC) - timedelta(days=days),
                    username="old",
                    action="POST /api/v1/orders",
                    status_code=201,
                    result="ok",
                )
            )
    engine.dispose()
    c = make_client(sqlite_url)
    rows = c.get(f"{API}/audit?username=old", auth=MANAGER).json()["items"]
    assert len(rows) == 1  # the 10-day-old one
    assert "microfactory_mes_audit_expired_total 2" in c.get(f"{API}/metrics").text


def test_capacity_warning_before_the_store_fills(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    trail, sessions = _trail(sqlite_url, max_rows=100)
    trail.housekeep(force=True)
    row = AuditRow(username="a", action="POST /x", status_code=200, result="ok")
    with caplog.at_level(logging.INFO, logger="microfactory.mes.audit"):
        for _ in range(79):
            trail.write(row)
        assert trail.metrics()["capacity_warning"] == 0 and not caplog.records
        for _ in range(5):
            trail.write(row)
        assert trail.capacity == "warning" and trail.metrics()["capacity_warning"] == 1
        warnings = [r for r in caplog.records if "audit store warning" in r.getMessage()]
        assert len(warnings) == 1  # once per state change, not per row
        for _ in range(17):
            trail.write(row)  # 101: the oldest are dropped, down to 95 %
    assert _count(sessions) == 95 and trail.metrics()["dropped_total"] == 6
    assert any("audit store full" in r.getMessage() for r in caplog.records)


def test_failures_and_writes_carry_user_name_and_address(
    sqlite_url: str, make_client: MakeClient
) -> None:
    c = make_client(sqlite_url)
    assert c.get(f"{API}/orders", auth=("mallory", "nope")).status_code == 401  # a read
    assert c.get(f"{API}/orders", headers={"Authorization": "Bearer abc.def"}).status_code == 401
    r = c.post(f"{API}/auth/token", json={"username": "manager", "password": "wrong"})
    assert r.status_code == 401
    assert c.post(f"{API}/products", json={}).status_code == 401  # anonymous write
    r = c.put(f"{API}/config", json={"co2e_g_per_kwh": 55.0}, auth=ADMIN)
    assert r.status_code == 200
    rows = c.get(f"{API}/audit?limit=20", auth=MANAGER).json()["items"]
    failures = {
        (a["username"], a["action"], a["detail"]["auth"]) for a in rows if a["entity"] == "auth"
    }
    assert ("mallory", "GET /api/v1/orders", "unknown user") in failures
    assert ("anonymous", "GET /api/v1/orders", "bad token") in failures
    assert ("manager", "POST /api/v1/auth/token", "password") in failures
    assert ("anonymous", "POST /api/v1/products", "no credentials") in failures
    write = next(a for a in rows if a["entity"] == "config")
    assert write["username"] == "admin" and write["result"] == "ok"
    assert write["detail"] == {"co2e_g_per_kwh": 55.0}
    assert all(a["address"] == "testclient" for a in rows)  # the TestClient's peer name


def test_three_hundred_anonymous_posts_are_not_three_hundred_rows(
    sqlite_url: str, make_client: MakeClient
) -> None:
    c = make_client(sqlite_url)
    for _ in range(300):
        assert c.post(f"{API}/orders", json={"junk": "x" * 1000}).status_code == 401
    rows = c.get(f"{API}/audit?username=anonymous&limit=1000", auth=MANAGER).json()
    assert rows["total"] == FLOOD_ROWS


def test_migration_0003_keeps_existing_rows(db_url: str) -> None:
    """From 0002 with a user and an audit row to head: both still there, new columns filled."""
    engine = db.make_engine(db_url)
    db.migrate(engine, "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (username, password_hash, role, active, created_at) "
                "VALUES ('old', 'scrypt$x', 'admin', :t, :now)"
            ),
            {"t": True, "now": OLD},
        )
        conn.execute(
            text(
                "INSERT INTO audit (ts, username, action, status_code, result) "
                "VALUES (:now, 'old', 'POST /api/v1/orders', 201, 'ok')"
            ),
            {"now": OLD},
        )
    db.migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT token_version FROM users")).scalar_one() == 0
        assert conn.execute(text("SELECT address FROM audit")).one() == (None,)
    db.migrate(engine, "0002")  # and back down
    db.migrate(engine)
    engine.dispose()
