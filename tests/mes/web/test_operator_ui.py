"""The operator web UI in real headless Chromium, against the real MES fed live by the simulated
workshop through the real gateway and Mosquitto.

The tests of this module tell one shop-floor day in order and share the running shop: the
manager releases orders, operators put batches on machines, record scrap, downtime and
material, open the batch record and trace a material lot; errors come back in words.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from tests.mes.web.conftest import REPO, Shop, log_in

pytestmark = pytest.mark.e2e

STARTS = (  # machine, option text in the start dialog
    ("laser-1", "SO-1001-01 — SO-1001 BRK-100 · op 10"),
    ("mill-1", "SO-1001-01 — SO-1001 BRK-100 · op 20"),
    ("printer-1", "SO-1002-01 — SO-1002 ENC-300 · op 10"),
    ("assembly-1", "SO-1002-01 — SO-1002 ENC-300 · op 20"),
)
LIVE_LATENCY_S = 2.0


def tile(page: Any, machine: str) -> Any:
    return page.locator(f'section.tile[data-machine="{machine}"]')


def shown_parts(page: Any, machine: str) -> int:
    t = tile(page, machine)
    return int(t.locator("[data-field=good]").inner_text()) + int(
        t.locator("[data-field=scrap]").inner_text()
    )


def message(page: Any, text: str) -> Any:
    return page.locator(".message", has_text=text)


def submit_dialog(page: Any) -> None:
    page.click("#dialog-ok")
    page.wait_for_selector("#dialog", state="hidden")


def test_login_in_words_and_live_tiles(shop: Shop, open_page: Any, artifacts: Path) -> None:
    page, errors = open_page()
    page.goto(f"{shop.url}/")
    page.wait_for_selector("#login-form")
    assert "Demo users" in page.inner_text("#login-form")
    page.fill("input[name=username]", "operator")
    page.fill("input[name=password]", "wrong")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-form .error:not([hidden])")
    assert page.inner_text("#login-form .error") == "Wrong username or password."

    log_in(page, shop.url, "operator")
    page.wait_for_selector("section.tile")
    machines = shop.api.get("/machines").json()["items"]
    assert page.locator("section.tile").count() == len(machines) == 5
    # the tiles show the states the MES holds, and keep changing while the machines work
    grid = page.locator("#tiles")
    first = int(grid.get_attribute("data-updates") or 0)
    page.wait_for_function(
        # a function, not an expression: Playwright evals an expression, which the CSP refuses
        f"() => Number(document.querySelector('#tiles').dataset.updates) > {first + 1}",
        timeout=15_000,
    )
    for m in shop.api.get("/machines").json()["items"]:
        if m["state"]:
            page.wait_for_selector(
                f'section.tile[data-machine="{m["id"]}"][data-state]', timeout=2000
            )
    assert page.get_attribute("#live", "data-live") == "on"
    page.screenshot(path=str(artifacts / "01-floor-before-batches.png"), full_page=True)
    assert not errors, errors


def test_order_board_role_checks_match_the_api(shop: Shop, open_page: Any, artifacts: Path) -> None:
    orders = {o["code"]: o for o in shop.api.get("/orders").json()["items"]}
    planned = orders["SO-1003"]
    # an operator sees the board read-only, and the API refuses the same actions
    page, errors = open_page()
    log_in(page, shop.url, "operator")
    page.goto(f"{shop.url}/ui/#/orders")
    page.wait_for_selector('tr[data-order="SO-1001"]')
    assert page.locator("tr[data-order] [data-action^='order.']").count() == 0
    assert page.locator("#new-order").count() == 0
    with shop.client("operator") as op:
        for path in (f"/orders/{planned['id']}/release", f"/orders/{planned['id']}/cancel"):
            r = op.post(path)
            assert r.status_code == 403, (path, r.text)
        r = op.patch(f"/orders/{planned['id']}", json={"priority": 99})
        assert r.status_code == 403, r.text
        assert r.json()["detail"] == "role manager required; 'operator' is operator"

    # the manager sees the actions and releases two orders from the board
    page, errors2 = open_page()
    log_in(page, shop.url, "manager")
    page.goto(f"{shop.url}/ui/#/orders")
    for code in ("SO-1001", "SO-1002"):
        row = page.locator(f'tr[data-order="{code}"]')
        row.locator("[data-action='order.release']").click()
        page.wait_for_selector(f'tr[data-order="{code}"][data-status="released"]')
    assert page.locator('tr[data-order="SO-1003"] [data-action="order.edit"]').count() == 1
    assert page.locator("tr[data-order] .bar").count() >= 3
    page.screenshot(path=str(artifacts / "02-order-board-manager.png"), full_page=True)
    assert not errors and not errors2, errors + errors2


def test_operator_starts_batches_and_tiles_follow_the_machines_live(
    shop: Shop, open_page: Any, artifacts: Path
) -> None:
    page, errors = open_page()
    log_in(page, shop.url, "operator")
    page.wait_for_selector('section.tile[data-machine="laser-1"]')
    for machine, option in STARTS:
        t = tile(page, machine)
        t.locator("[data-action='run.start']").click()
        page.wait_for_selector("#start-choice")
        value = page.locator("#start-choice option", has_text=option).first.get_attribute("value")
        page.select_option("#start-choice", value=value)
        submit_dialog(page)
        page.wait_for_selector(f'section.tile[data-machine="{machine}"][data-run-status="running"]')
        assert message(page, f"started on {machine}").count() >= 1
    laser = tile(page, "laser-1")
    assert laser.locator("[data-field=lot]").inner_text() == "SO-1001-01"
    assert "laser cut blank" in laser.locator("[data-field=operation]").inner_text()
    run_id = int(laser.get_attribute("data-run"))
    shop.notes["laser_run"] = run_id
    shop.notes["batch_id"] = shop.api.get(f"/runs/{run_id}").json()["batch_id"]

    # parts counted by the machine reach the tile within a second or two of reaching the MES
    latencies = []
    with shop.client("operator") as op:
        deadline = time.monotonic() + 30
        while op.get("/parts", params={"run_id": run_id, "limit": 1}).json()["total"] < 3:
            assert time.monotonic() < deadline, "no parts of the laser run reached the MES"
            time.sleep(0.3)
        for _ in range(4):
            total = op.get("/parts", params={"run_id": run_id, "limit": 1}).json()["total"]
            t0 = time.monotonic()
            page.wait_for_function(
                """([m, n]) => {
                    const t = document.querySelector(`section.tile[data-machine='${m}']`);
                    const g = t && t.querySelector('[data-field=good]');
                    const s = t && t.querySelector('[data-field=scrap]');
                    return g && s && Number(g.textContent) + Number(s.textContent) >= n;
                }""",
                arg=["laser-1", total],
                timeout=LIVE_LATENCY_S * 1000,
            )
            latencies.append(time.monotonic() - t0)
            time.sleep(0.6)
    assert max(latencies) < LIVE_LATENCY_S, latencies
    assert laser.locator("[data-field=wh]").inner_text().endswith("Wh")
    assert laser.locator("[data-field=power]").inner_text().endswith("W")
    page.screenshot(path=str(artifacts / "03-floor-batches-running.png"), full_page=True)
    assert not errors, errors


def test_operator_records_scrap_downtime_and_material(
    shop: Shop, open_page: Any, artifacts: Path
) -> None:
    page, errors = open_page()
    log_in(page, shop.url, "operator")
    laser = tile(page, "laser-1")
    laser.wait_for()
    run_id = shop.notes["laser_run"]
    scrap_before = sum(
        s["quantity"] for s in shop.api.get("/scrap", params={"run_id": run_id}).json()["items"]
    )

    laser.locator("[data-action='scrap.record']").click()
    page.fill("#scrap-quantity", "1")
    page.select_option("#scrap-reason", value="surface")
    page.fill("#scrap-note", "burr on the edge")
    submit_dialog(page)
    assert message(page, "1 scrap recorded on SO-1001-01 (surface)").count() == 1
    page.wait_for_function(
        f"""() => Number(document.querySelector(
            "section.tile[data-machine='laser-1'] [data-field=scrap]")
            .textContent) >= {scrap_before + 1}""",
        timeout=3000,
    )
    rows = shop.api.get("/scrap", params={"run_id": run_id, "reason_code": "surface"}).json()
    assert rows["total"] == 1 and rows["items"][0]["recorded_by"] == "operator"
    assert rows["items"][0]["note"] == "burr on the edge"

    laser.locator("[data-action='downtime.record']").click()
    page.wait_for_selector("#downtime-period")
    page.select_option("#downtime-period", value="new")
    page.fill("#downtime-minutes", "12")
    page.select_option("#downtime-reason", value="material_wait")
    submit_dialog(page)
    assert message(page, "Downtime on laser-1 recorded: material_wait.").count() == 1
    down = shop.api.get("/downtime", params={"machine_id": "laser-1"}).json()["items"]
    assert [d["reason_code"] for d in down if d["source"] != "machine"] == ["material_wait"]

    # a material lot scanned (typed + Enter, as a scanner does), then its quantity
    laser.locator("[data-action='material.consume']").click()
    page.fill("#material-lot", "ML-S235-2406")
    page.press("#material-lot", "Enter")
    page.wait_for_selector("#material-about:has-text('kg left')")
    page.fill("#material-quantity", "12.5")
    submit_dialog(page)
    assert message(page, "12.50 kg of ML-S235-2406 booked into SO-1001-01").count() == 1
    booked = shop.api.get(f"/batches/{shop.notes['batch_id']}/consumptions").json()["items"]
    assert [(c["quantity"], c["run_id"]) for c in booked] == [(12.5, run_id)]

    # an unknown lot is answered in words, in the dialog, which stays open to correct it
    laser.locator("[data-action='material.consume']").click()
    page.fill("#material-lot", "ML-NOPE-1")
    page.fill("#material-quantity", "1")
    page.click("#dialog-ok")
    page.wait_for_selector("#dialog-error:not([hidden])")
    assert page.inner_text("#dialog-error") == "Not found: material lot 'ML-NOPE-1' not found."
    page.screenshot(path=str(artifacts / "04-material-unknown-lot.png"))
    page.click("#dialog-cancel")

    page.wait_for_timeout(1500)  # a few more parts for the picture
    page.evaluate("document.getElementById('messages').replaceChildren()")
    page.screenshot(path=str(artifacts / "05-floor-after-actions.png"), full_page=True)
    if os.environ.get("MICROFACTORY_UPDATE_SCREENSHOTS"):  # refresh the README's picture
        docs = REPO / "docs" / "img"
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(artifacts / "05-floor-after-actions.png", docs / "shopfloor.png")
    assert not errors, errors


def test_batch_record_shows_energy_per_part(shop: Shop, open_page: Any, artifacts: Path) -> None:
    page, errors = open_page(1366, 1000)
    log_in(page, shop.url, "manager")
    tile(page, "laser-1").locator("[data-field=lot]").click()
    page.wait_for_url(f"**/ui/#/batch/{shop.notes['batch_id']}")
    page.wait_for_selector("#chart-energy-per-part rect.bar")
    parts = shop.api.get(
        "/parts", params={"batch_id": shop.notes["batch_id"], "limit": 1000}
    ).json()["items"]
    parts.reverse()  # completion order
    values = [
        float(v)
        for v in page.eval_on_selector_all(
            "#chart-energy-per-part rect.bar", "els => els.map(e => e.dataset.value)"
        )
    ]
    measured = [p["energy_wh"] for p in parts if p["energy_wh"] is not None]
    assert len(values) >= 3, values
    n = min(len(values), len(measured))
    assert values[:n] == pytest.approx(measured[:n]), "each bar is one part's own energy"
    assert page.locator("#chart-cycle-times rect.bar").count() >= 3
    assert page.locator("#chart-power circle.point").count() >= 3
    assert page.locator("#chart-scrap rect.bar").count() >= 1  # the operator's 'surface' scrap
    assert "ML-S235-2406" in page.inner_text("#batch")
    page.screenshot(path=str(artifacts / "06-batch-record.png"), full_page=True)
    assert not errors, errors


def test_errors_in_words_409_from_a_stale_tablet_and_403_after_a_role_change(
    shop: Shop, open_page: Any, artifacts: Path
) -> None:
    # tablet B's live link froze while laser-1 was running; another operator pauses the run
    snapshot = json.dumps(shop.api.get("/live/machines").json())
    page, errors = open_page()
    page.route(
        "**/api/v1/live/machines/stream",
        lambda route: route.fulfill(
            status=200,
            headers={"Content-Type": "text/event-stream"},
            body=f"event: machines\ndata: {snapshot}\n\n",
        ),
    )
    log_in(page, shop.url, "operator")
    laser = tile(page, "laser-1")
    laser.locator("[data-action='run.pause']").wait_for()
    run_id = shop.notes["laser_run"]
    with shop.client("operator") as op:
        assert op.post(f"/runs/{run_id}/pause", json={}).status_code == 200
        laser.locator("[data-action='run.pause']").click()
        expected = f"Not possible now: cannot pause operation run {run_id}: it is paused."
        message(page, expected).wait_for()
        page.screenshot(path=str(artifacts / "07-error-409-stale.png"))
        assert op.post(f"/runs/{run_id}/resume", json={}).status_code == 200

    # a manager demoted while logged in: the board still offers Release, the API says no
    r = shop.api.post("/users", json={"username": "chef", "password": "chef", "role": "manager"})
    assert r.status_code == 201, r.text
    page2, errors2 = open_page()
    log_in(page2, shop.url, "chef")
    page2.goto(f"{shop.url}/ui/#/orders")
    release = page2.locator('tr[data-order="SO-1003"] [data-action="order.release"]')
    release.wait_for()
    assert shop.api.patch(f"/users/{r.json()['id']}", json={"role": "operator"}).status_code == 200
    release.click()
    message(
        page2, "Not allowed for your role: role manager required; 'chef' is operator."
    ).wait_for()
    page2.screenshot(path=str(artifacts / "08-error-403-role.png"))
    orders = {o["code"]: o for o in shop.api.get("/orders").json()["items"]}
    assert orders["SO-1003"]["status"] == "planned"
    assert not errors and not errors2, errors + errors2


def test_traceability_forward_and_backward(shop: Shop, open_page: Any, artifacts: Path) -> None:
    page, errors = open_page()
    log_in(page, shop.url, "manager")
    page.goto(f"{shop.url}/ui/#/trace")
    # forward: where did the steel lot go (the recall question)
    page.fill("#trace-query", "ML-S235-2406")
    page.click("#trace-form button[type=submit]")
    tree = page.locator("#trace-result .tree")
    tree.wait_for()
    text = tree.inner_text()
    assert "ML-S235-2406" in text and "SO-1001-01" in text and "SO-1001" in text
    assert "Alpine Bikes GmbH" in text
    page.screenshot(path=str(artifacts / "09-trace-forward.png"), full_page=True)
    # backward: what went into the batch, on which machines, by whom
    page.fill("#trace-query", "SO-1001-01")
    page.click("#trace-form button[type=submit]")
    page.wait_for_selector("#trace-result li[data-kind=batch]")
    text = page.inner_text("#trace-result")
    for expected in ("ML-S235-2406", "laser-1", "mill-1", "operator", "kWh"):
        assert expected in text, expected
    # a part, by its id: its own energy, then its batch
    part = shop.api.get("/parts", params={"run_id": shop.notes["laser_run"], "limit": 1}).json()[
        "items"
    ][0]
    page.fill("#trace-query", str(part["id"]))
    page.select_option("#trace-kind", value="part")
    page.click("#trace-form button[type=submit]")
    page.wait_for_selector("#trace-result li[data-kind=part]")
    assert "laser-1" in page.inner_text("#trace-result li[data-kind=part]")
    page.screenshot(path=str(artifacts / "10-trace-part.png"), full_page=True)
    page.fill("#trace-query", "NOTHING-42")
    page.select_option("#trace-kind", value="auto")
    page.click("#trace-form button[type=submit]")
    page.wait_for_selector("#trace-result .notice")
    assert "Nothing found for “NOTHING-42”" in page.inner_text("#trace-result")
    assert not errors, errors
