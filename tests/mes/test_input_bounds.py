"""What the MES accepts is what it can put on the wire and store: ids, names and states bounded.

A machine id is a topic level of the wire contract, a name travels in the machine context into
InfluxDB tags, a state lands in a 16-character column; anything else is refused where it is
entered, naming the field, instead of failing later on the broker or in PostgreSQL.
"""

from __future__ import annotations

from tests.mes.conftest import ADMIN, MakeClient

API = "/api/v1"


def test_machine_ids_that_cannot_be_a_topic_level_are_refused(
    sqlite_url: str, make_client: MakeClient
) -> None:
    c = make_client(sqlite_url)
    for bad in ("line/1", "a+b", "a#b"):
        r = c.post(f"{API}/machines", json={"id": bad, "kind": "press"}, auth=ADMIN)
        assert r.status_code == 422, bad
        assert r.json()["detail"][0]["loc"] == ["body", "id"]
    r = c.post(f"{API}/machines", json={"id": "press-2", "kind": "press"}, auth=ADMIN)
    assert r.status_code == 201


def test_names_with_control_characters_are_refused(
    sqlite_url: str, make_client: MakeClient
) -> None:
    c = make_client(sqlite_url)
    for bad in ("Deburr\nline 2", "tab\there", "bell\x07", "c1\x85"):
        body: dict[str, object] = {"code": "P-N", "name": bad, "operations": []}
        r = c.post(f"{API}/products", json=body, auth=ADMIN)
        assert r.status_code == 422, repr(bad)
        assert r.json()["detail"][0]["loc"] == ["body", "name"]
    ok = {"code": "P-N", "name": 'Équerre "L" \\ 90° 🔩', "operations": []}
    assert c.post(f"{API}/products", json=ok, auth=ADMIN).status_code == 201


def test_a_state_longer_than_the_mes_keeps_is_refused_naming_the_field(
    sqlite_url: str, make_client: MakeClient
) -> None:
    c = make_client(sqlite_url)
    event = {
        "kind": "state_changed",
        "event_id": "long-state",
        "site": "demo",
        "machine": "mill-1",
        "ts_ns": 1_700_000_000_000_000_000,
        "state": "warming_up_phase_two",
    }
    r = c.post(f"{API}/events", json=event, auth=ADMIN)
    assert r.status_code == 422
    assert "state" in str(r.json()) and "16" in str(r.json())
    r = c.post(f"{API}/events", json={**event, "state": "running"}, auth=ADMIN)
    assert r.status_code == 200 and not r.json()["duplicate"]
