"""The MES API: precise 4xx for every kind of bad request, roles, audit trail, idempotent events."""

from __future__ import annotations

import json
from typing import Any

from microfactory.contract import GapReported
from microfactory.mes.ingest import ingest_event
from tests.mes.conftest import ADMIN, MANAGER, OPERATOR, MakeClient

API = "/api/v1"


def _ids(client: Any) -> dict[str, int]:
    orders = client.get(f"{API}/orders", auth=MANAGER).json()["items"]
    products = client.get(f"{API}/products", auth=MANAGER).json()["items"]
    return {o["code"]: o["id"] for o in orders} | {p["code"]: p["id"] for p in products}


def test_auth_and_roles(sqlite_url: str, make_client: MakeClient) -> None:
    c = make_client(sqlite_url)
    ids = _ids(c)
    r = c.get(f"{API}/orders")
    assert r.status_code == 401 and "authentication required" in r.json()["detail"]
    assert c.get(f"{API}/orders", auth=("manager", "wrong")).status_code == 401
    # an operator runs batches but cannot edit orders, products or users
    r = c.patch(f"{API}/orders/{ids['SO-1003']}", json={"quantity": 5}, auth=OPERATOR)
    assert r.status_code == 403 and "role manager required" in r.json()["detail"]
    assert c.post(f"{API}/orders/{ids['SO-1003']}/release", auth=OPERATOR).status_code == 403
    r = c.post(
        f"{API}/products", json={"code": "P-X", "name": "x", "operations": []}, auth=OPERATOR
    )
    assert r.status_code == 403
    assert c.get(f"{API}/users", auth=MANAGER).status_code == 403
    assert c.get(f"{API}/users", auth=ADMIN).status_code == 200
    # the manager can, and a bearer token works like the password
    token = c.post(f"{API}/auth/token", json={"username": "manager", "password": "manager"})
    assert token.status_code == 200 and token.json()["role"] == "manager"
    bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
    r = c.patch(f"{API}/orders/{ids['SO-1003']}", json={"quantity": 130}, headers=bearer)
    assert r.status_code == 200 and r.json()["quantity"] == 130
    bad = {"Authorization": "Bearer " + token.json()["access_token"][:-2] + "xx"}
    assert c.get(f"{API}/orders", headers=bad).status_code == 401


def test_demo_passwords_refused_outside_demo_mode(sqlite_url: str, make_client: MakeClient) -> None:
    c = make_client(sqlite_url, demo=False)
    r = c.get(f"{API}/orders", auth=MANAGER)
    assert r.status_code == 403 and "demo password" in r.json()["detail"]


def test_404_for_unknown_ids(sqlite_url: str, make_client: MakeClient) -> None:
    c = make_client(sqlite_url)
    for path in (
        "/orders/999",
        "/batches/999",
        "/runs/999",
        "/parts/999",
        "/machines/nope",
        "/material-lots/NOPE",
        "/material-lots/NOPE/trace",
        "/products/999",
        "/downtime/999",
        "/orders/999/progress",
        "/batches/999/record",
    ):
        r = c.get(API + path, auth=MANAGER)
        assert r.status_code == 404, path
        assert "not found" in r.json()["detail"], path
    r = c.post(f"{API}/orders/999/release", auth=MANAGER)
    assert r.status_code == 404 and r.json()["id"] == "999"


def test_409_names_the_current_state(sqlite_url: str, make_client: MakeClient) -> None:
    c = make_client(sqlite_url)
    ids = _ids(c)
    order = ids["SO-1003"]
    assert c.post(f"{API}/orders/{order}/release", auth=MANAGER).status_code == 200
    r = c.post(f"{API}/orders/{order}/release", auth=MANAGER)
    assert r.status_code == 409
    body = r.json()
    assert body["current_state"] == "released" and "it is released" in body["detail"]
    r = c.patch(f"{API}/orders/{order}", json={"quantity": 3}, auth=MANAGER)
    assert r.status_code == 409 and r.json()["current_state"] == "released"
    r = c.post(
        f"{API}/orders", json={"code": "SO-1001", "product_id": 1, "quantity": 1}, auth=MANAGER
    )
    assert r.status_code == 409 and r.json()["field"] == "code"


def test_422_names_the_field(sqlite_url: str, make_client: MakeClient) -> None:
    c = make_client(sqlite_url)
    ids = _ids(c)
    r = c.post(f"{API}/orders", json={"code": "SO-9", "product_id": 1, "quantity": 0}, auth=MANAGER)
    assert r.status_code == 422
    assert any(e["loc"][-1] == "quantity" for e in r.json()["detail"])
    r = c.post(
        f"{API}/orders", json={"code": "SO-9", "product_id": 1, "quantity": 1, "x": 1}, auth=MANAGER
    )
    assert r.status_code == 422 and any(e["loc"][-1] == "x" for e in r.json()["detail"])
    assert c.get(f"{API}/orders?limit=0", auth=MANAGER).status_code == 422
    # a domain rule: the machine must be of the kind the operation needs
    c.post(f"{API}/orders/{ids['SO-1003']}/release", auth=MANAGER)
    batch = c.get(f"{API}/batches?order_id={ids['SO-1003']}", auth=OPERATOR).json()["items"][0]
    product = c.get(f"{API}/products/{ids['BRK-100']}", auth=OPERATOR).json()
    laser_op = product["operations"][0]["id"]
    r = c.post(
        f"{API}/batches/{batch['id']}/start",
        json={"operation_id": laser_op, "machine_id": "mill-1"},
        auth=OPERATOR,
    )
    assert r.status_code == 422 and r.json()["field"] == "machine_id"
    r = c.post(
        f"{API}/batches/{batch['id']}/start",
        json={"operation_id": laser_op, "machine_id": "laser-1", "at": "2150-01-01T00:00:00Z"},
        auth=OPERATOR,
    )
    assert r.status_code == 422 and r.json()["field"] == "at"


def test_operator_day_over_the_api(sqlite_url: str, make_client: MakeClient) -> None:
    """Start a batch, book material, count, scrap, record downtime; all audited."""
    c = make_client(sqlite_url)
    ids = _ids(c)
    c.post(f"{API}/orders/{ids['SO-1001']}/release", auth=MANAGER)
    batch = c.get(f"{API}/batches?order_id={ids['SO-1001']}", auth=OPERATOR).json()["items"][0]
    ops = c.get(f"{API}/products/{ids['BRK-100']}", auth=OPERATOR).json()["operations"]
    r = c.post(
        f"{API}/batches/{batch['id']}/start",
        json={"operation_id": ops[1]["id"], "machine_id": "mill-1"},
        auth=OPERATOR,
    )
    assert r.status_code == 201, r.text
    run = r.json()
    r = c.post(
        f"{API}/batches/{batch['id']}/consume",
        json={"material_lot": "ML-S235-2405", "quantity": 12.5},
        auth=OPERATOR,
    )
    assert r.status_code == 201, r.text
    r = c.post(f"{API}/runs/{run['id']}/parts", json={"quantity": 3}, auth=OPERATOR)
    assert r.status_code == 201, r.text
    r = c.post(
        f"{API}/runs/{run['id']}/scrap",
        json={"quantity": 1, "reason_code": "dimension"},
        auth=OPERATOR,
    )
    assert r.status_code == 201, r.text
    r = c.post(
        f"{API}/runs/{run['id']}/scrap",
        json={"quantity": 5, "reason_code": "dimension"},
        auth=OPERATOR,
    )
    assert r.status_code == 409 and r.json()["field"] == "quantity"
    r = c.post(
        f"{API}/runs/{run['id']}/scrap", json={"quantity": 1, "reason_code": "nope"}, auth=OPERATOR
    )
    assert r.status_code == 422 and r.json()["field"] == "reason_code"
    progress = c.get(f"{API}/orders/{ids['SO-1001']}/progress", auth=OPERATOR).json()
    assert (progress["good"], progress["scrap"]) == (2, 1)
    r = c.post(f"{API}/runs/{run['id']}/complete", auth=OPERATOR)
    assert r.status_code == 200 and r.json()["status"] == "done"
    r = c.post(f"{API}/runs/{run['id']}/complete", auth=OPERATOR)
    assert r.status_code == 409 and r.json()["current_state"] == "done"
    trace = c.get(f"{API}/material-lots/ML-S235-2405/trace", auth=OPERATOR).json()
    assert [b["lot_number"] for b in trace["batches"]] == [batch["lot_number"]]
    html = c.get(f"{API}/batches/{batch['id']}/record.html", auth=OPERATOR)
    assert html.status_code == 200 and batch["lot_number"] in html.text
    audit = c.get(f"{API}/audit?username=operator", auth=MANAGER).json()["items"]
    actions = {(a["action"].split(" ")[0], a["result"]) for a in audit}
    assert ("POST", "ok") in actions and ("POST", "refused") in actions
    assert len(audit) >= 8


def test_events_over_http_are_idempotent(sqlite_url: str, make_client: MakeClient) -> None:
    c = make_client(sqlite_url)
    event = {
        "kind": "state_changed",
        "event_id": "h-1",
        "site": "demo",
        "machine": "mill-1",
        "ts_ns": 1_700_000_000_000_000_000,
        "state": "running",
    }
    first = c.post(f"{API}/events", json=event, auth=ADMIN).json()
    again = c.post(f"{API}/events", json=event, auth=ADMIN).json()
    assert first["duplicate"] is False and again["duplicate"] is True
    r = c.post(f"{API}/events", json={**event, "kind": "exploded"}, auth=ADMIN)
    assert r.status_code == 422
    assert c.get(f"{API}/machines/mill-1", auth=OPERATOR).json()["state"] == "running"


def test_openapi_documents_the_api(sqlite_url: str, make_client: MakeClient) -> None:
    c = make_client(sqlite_url)
    schema = c.get("/openapi.json").json()
    paths = schema["paths"]
    for p in (
        "/api/v1/orders",
        "/api/v1/batches/{batch_id}/start",
        "/api/v1/reports/oee",
        "/api/v1/material-lots/{lot_number}/trace",
        "/api/v1/events",
    ):
        assert p in paths, p


def test_times_out_of_range_are_422_not_500(sqlite_url: str, make_client: MakeClient) -> None:
    """Year 1 or 9999 with an offset overflows datetime (and ns overflow int64): refuse early."""
    c = make_client(sqlite_url)
    for when in ("0001-01-01T00:00:00+05:00", "9999-12-31T23:59:59-12:00", "1969-12-31T23:59:59Z"):
        for path, body, field in (
            (
                "/orders",
                {"code": "SO-T", "product_id": 1, "quantity": 1, "due_date": when},
                "due_date",
            ),
            (
                "/downtime",
                {"machine_id": "mill-1", "started_at": when, "reason_code": "tool_change"},
                "started_at",
            ),
            (
                "/material-lots",
                {
                    "lot_number": "ML-T",
                    "material": "steel",
                    "received_quantity": 1,
                    "unit": "kg",
                    "received_at": when,
                },
                "received_at",
            ),
        ):
            r = c.post(API + path, json=body, auth=ADMIN)
            assert r.status_code == 422, (path, when, r.text)
            assert ["body", field] in [e["loc"] for e in r.json()["detail"]], r.text
        for path, param in (
            ("/reports/oee?machine_id=mill-1&by=shift", "end"),
            ("/reports/energy?product_id=1", "end"),
            ("/reports/downtime-pareto?machine_id=mill-1", "end"),
            ("/downtime", "since"),
        ):
            r = c.get(API + path, params={param: when}, auth=MANAGER)
            assert r.status_code == 422, (path, when, r.text)
            assert ["query", param] in [e["loc"] for e in r.json()["detail"]], r.text


def test_undecodable_bodies_are_422_not_500(sqlite_url: str, make_client: MakeClient) -> None:
    """A lone surrogate echoed in the 422 could not be encoded as UTF-8; raw non-UTF-8 bytes
    made FastAPI answer 400: both are a 422 naming where the bad value is."""
    c = make_client(sqlite_url)
    json_type = {"content-type": "application/json"}
    r = c.post(
        f"{API}/products",
        content=b'{"code": "P-S", "name": "\\ud800", "operations": []}',
        headers=json_type,
        auth=MANAGER,
    )
    assert r.status_code == 422, r.text
    assert [e["loc"] for e in r.json()["detail"]] == [["body", "name"]]
    r = c.post(f"{API}/auth/token", content=b'{"username": "\\udfff"}', headers=json_type)
    assert r.status_code == 422 and ["body", "username"] in [e["loc"] for e in r.json()["detail"]]
    r = c.put(f"{API}/config", content=b"\x17\xffNr\xff", headers=json_type, auth=ADMIN)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["body"]


def test_openapi_documents_every_refusal(sqlite_url: str, make_client: MakeClient) -> None:
    """Clients (and schemathesis) can rely on the shape of 401/403/404/409/422, as JSON even
    where the success is an HTML page."""
    c = make_client(sqlite_url)
    schema = c.get("/openapi.json").json()
    for path, method in (
        ("/api/v1/orders/{order_id}/release", "post"),
        ("/api/v1/batches/{batch_id}/record.html", "get"),
        ("/api/v1/live/machines", "get"),
    ):
        responses = schema["paths"][path][method]["responses"]
        for status in ("401", "403", "404", "409", "422"):
            assert list(responses[status]["content"]) == ["application/json"], (path, status)
    problem = schema["components"]["schemas"]["Problem"]["properties"]
    assert {"detail", "entity", "id", "current_state", "action", "field"} <= set(problem)
    r = c.post(f"{API}/orders/999/release", auth=MANAGER)
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"


def test_implausible_events_and_times_are_422_naming_the_field(
    sqlite_url: str, make_client: MakeClient
) -> None:
    """A person posting an event or counting parts is told what is wrong; a replay of an event
    the MES already holds stays a harmless duplicate."""
    c = make_client(sqlite_url)
    part: dict[str, Any] = {
        "kind": "part_completed",
        "event_id": "v-p",
        "site": "demo",
        "machine": "mill-1",
        "ts_ns": 1_700_000_000_000_000_000,
        "part_count": 1,
    }
    gap = {**part, "kind": "gap", "event_id": "v-g", "start_ns": part["ts_ns"] + 1, "reason": "x"}
    json_type = {"content-type": "application/json"}
    for body, field in (
        (json.dumps(gap), "start_ns"),
        (json.dumps({**part, "energy_wh": 1e308}), "energy_wh"),
        (json.dumps({**part, "energy_wh": -1.0}), "energy_wh"),
        (json.dumps({**part, "energy_wh": float("nan")}), "energy_wh"),
        (json.dumps({**part, "cycle_time_s": float("inf")}), "cycle_time_s"),
    ):
        r = c.post(f"{API}/events", content=body, headers=json_type, auth=ADMIN)
        assert r.status_code == 422 and r.json()["field"] == field, (body, r.text)
    assert c.get(f"{API}/events", auth=MANAGER).json()["total"] == 0
    with c.app.state.runtime.sessions() as s:  # type: ignore[attr-defined]
        ingest_event(s, GapReported.model_validate(gap), "demo")  # as over MQTT
        s.commit()
    r = c.post(f"{API}/events", json=gap, auth=ADMIN)
    assert r.status_code == 200 and r.json()["duplicate"] is True
    (event,) = c.get(f"{API}/events", auth=MANAGER).json()["items"]
    assert event["outcome"].startswith("rejected: start_ns")

    ids = _ids(c)
    c.post(f"{API}/orders/{ids['SO-1001']}/release", auth=MANAGER)
    batch = c.get(f"{API}/batches?order_id={ids['SO-1001']}", auth=OPERATOR).json()["items"][0]
    ops = c.get(f"{API}/products/{ids['BRK-100']}", auth=OPERATOR).json()["operations"]
    r = c.post(
        f"{API}/batches/{batch['id']}/start",
        json={"operation_id": ops[1]["id"], "machine_id": "mill-1", "at": "2024-05-01T08:00:00Z"},
        auth=OPERATOR,
    )
    run = r.json()
    r = c.post(f"{API}/runs/{run['id']}/parts", json={"at": "2024-05-01T07:59:00Z"}, auth=OPERATOR)
    assert r.status_code == 422 and r.json()["field"] == "at", r.text
    assert "before the run's start" in r.json()["detail"]
    c.post(f"{API}/runs/{run['id']}/pause", json={"at": "2024-05-01T09:00:00Z"}, auth=OPERATOR)
    r = c.post(
        f"{API}/runs/{run['id']}/complete", json={"at": "2024-05-01T08:30:00Z"}, auth=OPERATOR
    )
    assert r.status_code == 422 and r.json()["field"] == "at", r.text


def test_reports_and_traces_document_their_answers(
    sqlite_url: str, make_client: MakeClient
) -> None:
    """The numbers and the genealogy have typed answers in the schema (schemathesis checks
    every response against them)."""
    c = make_client(sqlite_url)
    paths = c.get("/openapi.json").json()["paths"]
    for path, model in (
        ("/api/v1/orders/{order_id}/progress", "OrderProgress"),
        ("/api/v1/batches/{batch_id}/progress", "BatchProgress"),
        ("/api/v1/orders/{order_id}/energy", "OrderEnergy"),
        ("/api/v1/batches/{batch_id}/energy", "BatchEnergy"),
        ("/api/v1/reports/energy", "ProductEnergy"),
        ("/api/v1/reports/downtime-pareto", "DowntimePareto"),
        ("/api/v1/parts/{part_id}/trace", "PartTrace"),
        ("/api/v1/batches/{batch_id}/record", "BatchRecord"),
        ("/api/v1/material-lots/{lot_number}/trace", "MaterialTrace"),
    ):
        schema = paths[path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{model}"}, (path, schema)
    oee = paths["/api/v1/reports/oee"]["get"]["responses"]["200"]["content"]
    refs = {s["$ref"] for s in oee["application/json"]["schema"]["oneOf"]}
    assert refs == {"#/components/schemas/OeeOverWindow", "#/components/schemas/OeeByShift"}
