"""The live tiles behind the shop-floor view, through the real app (no browser, no broker):
machine events posted as the gateway would send them show up on the tile and in the stream."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi.testclient import TestClient

from microfactory.mes import db
from microfactory.mes.api.app import create_app
from microfactory.mes.seed import seed_demo
from microfactory.mes.settings import MesSettings
from microfactory.mes.web.tiles import mean_power_w

OPERATOR = ("operator", "operator")
ADMIN = ("admin", "admin")


def _client(tmp_path: Path) -> TestClient:
    app = create_app(
        MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}", demo=True, site="demo")
    )
    with db.session_scope(app.state.runtime.sessions) as session:
        seed_demo(session)
    return TestClient(app)


def test_mean_power_of_a_part_cycle() -> None:
    assert mean_power_w(10.0, 36.0) == 1000.0
    assert mean_power_w(None, 36.0) is None
    assert mean_power_w(10.0, 0.0) is None


def test_tiles_follow_events_and_runs(tmp_path: Path) -> None:
    with _client(tmp_path) as c:
        assert c.get("/api/v1/live/machines").status_code == 401
        assert c.get("/").headers.get("location") is None  # followed: the UI page
        assert c.get("/", follow_redirects=False).headers["location"] == "/ui/"
        assert "microfactory" in c.get("/ui/").text
        assert c.get("/ui/static/app.js").headers["content-type"].startswith("text/javascript")
        orders = {o["code"]: o for o in c.get("/api/v1/orders", auth=ADMIN).json()["items"]}
        assert c.post(f"/api/v1/orders/{orders['SO-1001']['id']}/release", auth=ADMIN).is_success
        batch = c.get("/api/v1/batches", params={"lot_number": "SO-1001-01"}, auth=OPERATOR)
        product = c.get(f"/api/v1/products/{orders['SO-1001']['product_id']}", auth=OPERATOR)
        op = next(o for o in product.json()["operations"] if o["seq"] == 10)
        r = c.post(
            f"/api/v1/batches/{batch.json()['items'][0]['id']}/start",
            json={"operation_id": op["id"], "machine_id": "laser-1"},
            auth=OPERATOR,
        )
        assert r.status_code == 201, r.text
        now_ns = time.time_ns()
        bodies: tuple[dict[str, object], ...] = (
            {"kind": "state_changed", "state": "running", "previous": "idle"},
            {"kind": "part_completed", "part_count": 1, "energy_wh": 50.0, "cycle_time_s": 18},
            {"kind": "part_completed", "part_count": 2, "energy_wh": 70.0, "cycle_time_s": 21},
        )
        for i, body in enumerate(bodies):
            event: dict[str, object] = {"event_id": f"t/{i}", "site": "demo", "machine": "laser-1"}
            event.update(body)
            event["ts_ns"] = now_ns + (i + 1) * 1_000_000_000
            assert c.post("/api/v1/events", json=event, auth=ADMIN).status_code == 200
        tiles = {
            t["id"]: t for t in c.get("/api/v1/live/machines", auth=OPERATOR).json()["machines"]
        }
        laser = tiles["laser-1"]
        assert laser["state"] == "running"
        assert laser["run"]["lot_number"] == "SO-1001-01"
        assert (laser["run"]["good"], laser["run"]["scrap"], laser["run"]["parts"]) == (2, 0, 2)
        assert laser["run"]["wh_per_part"] == 60.0
        assert laser["last_cycle_power_w"] == 12000.0  # 70 Wh in 21 s
        assert tiles["mill-1"]["run"] is None

        with c.stream(
            "GET", "/api/v1/live/machines/stream", params={"max_s": 1.5}, auth=OPERATOR
        ) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            text = "".join(stream.iter_text())
        assert "event: machines" in text and '"lot_number":"SO-1001-01"' in text
