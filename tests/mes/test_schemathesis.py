"""Schemathesis against the MES's own OpenAPI schema: no request, however odd, gets a 500.

Every operation of ``/openapi.json`` is fuzzed in process (ASGI) against a seeded SQLite
database, once as admin (every endpoint reachable) and once as operator (the role checks
answer instead). The run is derandomized with a fixed seed so CI sees the same cases every
time; a failure prints the exact request to replay.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from schemathesis import Case
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema

from microfactory.mes import db
from microfactory.mes.api.app import create_app
from microfactory.mes.calc.intervals import NS
from microfactory.mes.seed import seed_demo, start_demo_batches
from microfactory.mes.settings import MesSettings

pytestmark = pytest.mark.integration

API = "/api/v1"
OPERATOR = ("operator", "operator")
MAX_EXAMPLES = 25
SEED = 20240501
LIVE_STREAM = "/api/v1/live/machines/stream"  # SSE, never ends: excluded from the schema


def _config() -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
            "checks": {
                "enabled": False,
                "not_a_server_error": {"enabled": True},
                "status_code_conformance": {"enabled": True},
                "content_type_conformance": {"enabled": True},
                "response_schema_conformance": {"enabled": True},
            },
        }
    )


def _schema() -> BaseSchema:
    """The schema of an app on an in-memory database: only its routes matter here.

    Loaded at import because ``schemathesis.pytest.from_fixture`` (4.32) breaks on pytest 9.2
    (it rewrites ``Function._nodeid``, which pytest no longer has); each test then sends its
    requests to the seeded app of its role (``app=`` of ``call_and_validate``).
    """
    app = create_app(MesSettings(db_url="sqlite://", demo=True, site="demo"), start_bridge=False)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=_config())


schema = _schema()


def _a_shift_on_the_floor(client: TestClient) -> None:
    """Runs, parts with energy, scrap, downtime and a gap, so that id 1 of each exists and the
    numbers endpoints have something to add up (the fuzzer hits the lowest ids at times)."""
    ts = int(datetime.now(UTC).timestamp()) * NS
    events: list[dict[str, Any]] = [
        {"kind": "state_changed", "state": "running", "ts_ns": ts - 60 * NS},
        *(
            {"kind": "part_completed", "part_count": n, "energy_wh": 12.5, "ts_ns": ts - n * NS}
            for n in range(1, 4)
        ),
        {"kind": "gap", "start_ns": ts - 30 * NS, "ts_ns": ts - 20 * NS, "reason": "timeout"},
        {"kind": "state_changed", "state": "fault", "previous": "running", "ts_ns": ts},
    ]
    for i, event in enumerate(events):
        body = {"event_id": f"seed-{i}", "site": "demo", "machine": "mill-1", **event}
        answer = client.post(f"{API}/events", json=body, auth=("admin", "admin"))
        assert answer.status_code == 200, answer.text
    run = client.get(f"{API}/runs?status=running", auth=OPERATOR).json()["items"][0]
    for path, body in (
        (f"/runs/{run['id']}/parts", {"quantity": 2}),
        (f"/runs/{run['id']}/scrap", {"quantity": 1, "reason_code": "dimension"}),
    ):
        answer = client.post(API + path, json=body, auth=OPERATOR)
        assert answer.status_code == 201, answer.text


@pytest.fixture(scope="module", params=["admin", "operator"])
def role_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FastAPI, dict[str, str]]:
    """The MES on a fresh seeded SQLite file, and the bearer header of one demo role.

    A bearer token, not Basic: the admin pass may change the admin's own password, and a token
    stays valid when it does.
    """
    role: str = request.param
    path = tmp_path_factory.mktemp(f"st-{role}") / "mes.sqlite"
    app = create_app(
        MesSettings(db_url=f"sqlite:///{path}", demo=True, site="demo"), start_bridge=False
    )
    with db.session_scope(app.state.runtime.sessions) as session:
        seed_demo(session)
        start_demo_batches(session)
    with TestClient(app) as client:
        _a_shift_on_the_floor(client)
        answer = client.post("/api/v1/auth/token", json={"username": role, "password": role})
        assert answer.status_code == 200, answer.text
        token: str = answer.json()["access_token"]
        paths: dict[str, Any] = client.get("/openapi.json").json()["paths"]
    assert LIVE_STREAM not in paths, "the never-ending SSE stream must stay out of the schema"
    return app, {"Authorization": f"Bearer {token}"}


@schema.parametrize()
def test_no_server_errors(case: Case[Any], role_app: tuple[FastAPI, dict[str, str]]) -> None:
    """Any generated request gets a documented answer: a 2xx or a precise 4xx, never a 5xx."""
    app, headers = role_app
    case.call_and_validate(headers=headers, app=app)
