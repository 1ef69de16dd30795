"""Names an operator or a manager types reach InfluxDB as they were typed (issue 12, finding 2).

A batch name ending in a backslash once made InfluxDB refuse every line of its machine: all
samples quarantined, none delivered. Here the whole road is real: a product whose operation
name holds a backslash at the end, quotes, an apostrophe, accents and an emoji is created over
the MES API, a run started on it; the MES publishes the machine context on a real Mosquitto,
the gateway's MES link takes it, and samples tagged with it go through the InfluxDB 1.x sink
into a real InfluxDB and read back.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import httpx
import pytest

from microfactory.cli.ports import free_port
from microfactory.gateway.config import InfluxSettings, parse_site_config
from microfactory.gateway.sample import Sample
from microfactory.gateway.sinks.base import SinkContext
from microfactory.gateway.sinks.influxdb.v1 import InfluxV1Sink
from microfactory.gateway.sinks.mes_events.link import MesLink
from microfactory.mes import db
from microfactory.mes.api.app import create_app
from microfactory.mes.seed import seed_demo
from microfactory.mes.server import serve_in_loop
from microfactory.mes.settings import MesSettings
from tests.helpers.servers import InfluxDB1, Mosquitto
from tests.helpers.waiting import wait_for

pytestmark = pytest.mark.integration

MANAGER = ("manager", "manager")
OPERATOR = ("operator", "operator")
OPERATION = 'Ébavurage "fin" d\'équerre 🔩 C:\\outils\\'
# what InfluxDB can hold of it: a trailing backslash would escape the delimiter after it, so it
# is stored as U+FF3C (docs/wire-contract.md, "Characters in names and text")
STORED = 'Ébavurage "fin" d\'équerre 🔩 C:\\outils\uff3c'


async def _start_run(api: httpx.AsyncClient) -> None:
    """A product and an order typed in by a manager, a run started by an operator on mill-1."""
    product = {
        "code": "EQ-90",
        "name": 'Équerre 90° "renforcée"',
        "operations": [
            {"seq": 10, "name": OPERATION, "machine_kind": "cnc_mill", "ideal_cycle_time_s": 40}
        ],
    }
    r = await api.post("/products", json=product, auth=MANAGER)
    assert r.status_code == 201, r.text
    created = r.json()
    order = {"code": "SO-9001", "product_id": created["id"], "quantity": 10}
    r = await api.post("/orders", json=order, auth=MANAGER)
    assert r.status_code == 201, r.text
    order_id = r.json()["id"]
    assert (await api.post(f"/orders/{order_id}/release", auth=MANAGER)).status_code == 200
    batch = (await api.get(f"/batches?order_id={order_id}", auth=OPERATOR)).json()["items"][0]
    body = {"operation_id": created["operations"][0]["id"], "machine_id": "mill-1"}
    r = await api.post(f"/batches/{batch['id']}/start", json=body, auth=OPERATOR)
    assert r.status_code == 201, r.text


async def test_an_operation_name_with_a_trailing_backslash_quotes_and_emoji_reaches_influx(
    mosquitto: Mosquitto, influxdb1: InfluxDB1, tmp_path: Path
) -> None:
    settings = MesSettings(
        db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}",
        mqtt_url=mosquitto.url,
        site="demo",
        demo=True,
        mqtt_client_id="names-mes",
    )
    app = create_app(settings)
    with db.session_scope(app.state.runtime.sessions) as session:
        seed_demo(session)  # machines, users; no batch running yet
    server = await serve_in_loop(app, "127.0.0.1", free_port())
    site = parse_site_config(
        {
            "site": "demo",
            "mqtt": {"url": mosquitto.url, "client_id": "names-gw"},
            "mes_link": {"events": False},
            "spool": {"path": str(tmp_path / "gw" / "spool.sqlite")},
            "machines": [{"id": "mill-1", "kind": "cnc_mill"}],
        },
        "operator names",
    )
    link = MesLink.from_site(site)
    sink = InfluxV1Sink(
        InfluxSettings(api="v1", url=influxdb1.url, database="names"),
        SinkContext("demo", tmp_path, logging.getLogger("test")),
    )
    try:
        await link.open()
        async with httpx.AsyncClient(base_url=f"{server.url}/api/v1", timeout=10) as api:
            await _start_run(api)
        await wait_for(
            lambda: link.context.get("mill-1", {}).get("order") == "SO-9001",
            15,
            "the run's context at the gateway",
        )
        tags = link.context["mill-1"]
        assert tags["operation"] == f"10:{OPERATION}" and tags["product"] == "EQ-90"
        assert link.refused == {}
        await sink.open()
        await sink.ensure_database()
        now = time.time_ns()
        await sink.write(  # raises SinkError when InfluxDB refuses the lines (quarantine)
            [
                Sample("mill-1", "power_active", 4200.0, "W", now, tags=tags),
                Sample("mill-1", "program", 'O7 "contour"', "", now + 1, tags=tags),
            ]
        )
        rows = influxdb1.rows('SELECT * FROM "telemetry"', "names")
        assert {(r["operation"], r["batch"], r["order"]) for r in rows} == {
            (f"10:{STORED}", tags["batch"], "SO-9001")
        }
        assert sorted((r["signal"], r["value"], r["text"]) for r in rows) == [
            ("power_active", 4200.0, None),
            ("program", None, 'O7 "contour"'),
        ]
    finally:
        await sink.close()
        await link.close()
        await server.stop()
