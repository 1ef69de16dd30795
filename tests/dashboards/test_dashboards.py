"""The Grafana provisioning and dashboards, checked without a Grafana.

Structure: every dashboard JSON is valid for Grafana's schema version 39 (unique ids, grid
positions that fit and do not overlap, datasources that the provisioning YAML defines, every
template variable used is defined), and is exactly what ``dashboards/tools/build_dashboards.py``
writes. InfluxQL: the simulated workshop runs through the real gateway into a real InfluxDB
1.x, with batch context from MQTT as the MES publishes it; every query of every InfluxQL
dashboard — variables first, as Grafana resolves them — is interpolated the way Grafana does
and must return rows. Flux (no Flux engine here): every query is interpolated the same way and
checked by InfluxData's Flux language server (parser and semantic check: types, function
signatures, imports), plus the shape every query must have.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from microfactory.contract import MACHINE_STATES
from microfactory.sim.truth import load_truth
from tests.dashboards import grafana
from tests.dashboards.grafana import Target
from tests.dashboards.workshop_data import (
    BATCHES,
    MACHINES,
    ORDERS,
    SITE,
    WorkshopRun,
    run_workshop,
)
from tests.helpers.markers import starts_server
from tests.helpers.servers import InfluxDB1, Mosquitto

DASHBOARDS = grafana.load_dashboards()
INFLUXQL = {n: d for n, d in DASHBOARDS.items() if not grafana.is_flux(d)}
FLUX = {n: d for n, d in DASHBOARDS.items() if grafana.is_flux(d)}
AUTO_INTERVAL = "10s"  # what Grafana computes for a short range on a wide panel
FLUX_CHECK = grafana.DASHBOARDS / "tools" / "flux-check"
# Flux functions the dashboards may call; the Flux language server checks their signatures.
FLUX_FUNCTIONS = {
    "from", "range", "filter", "group", "sort", "difference", "aggregateWindow", "last",
    "sum", "mean", "count", "max", "map", "pivot", "union", "set", "yield", "contains",
    "schema.tagValues", "keep", "drop", "rename", "increments",
}  # fmt: skip


def _datasources() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for path in sorted((grafana.PROVISIONING / "datasources").glob("*.yaml")):
        out += yaml.safe_load(path.read_text())["datasources"]
    return out


# --------------------------------------------------------------------------- provisioning
def test_datasources_provision_influxql_and_flux_from_the_environment() -> None:
    by_uid = {ds["uid"]: ds for ds in _datasources()}
    assert set(by_uid) == {"microfactory-influxql", "microfactory-flux"}
    ql, flux = by_uid["microfactory-influxql"], by_uid["microfactory-flux"]
    assert ql["type"] == flux["type"] == "influxdb"
    assert "version" not in ql["jsonData"] or ql["jsonData"]["version"] == "InfluxQL"
    assert flux["jsonData"]["version"] == "Flux"
    env = re.compile(r"^\$\{MICROFACTORY_INFLUXDB__[A-Z]+\}$")
    for value in (
        ql["url"],
        ql["jsonData"]["dbName"],
        ql["secureJsonData"]["password"],
        flux["url"],
        flux["jsonData"]["organization"],
        flux["jsonData"]["defaultBucket"],
        flux["secureJsonData"]["token"],
    ):
        assert env.match(value), f"{value!r}: expected a ${{MICROFACTORY_INFLUXDB__...}} value"
    assert sum(bool(ds.get("isDefault")) for ds in by_uid.values()) <= 1


def test_dashboard_provider_loads_the_mounted_folder() -> None:
    data = yaml.safe_load((grafana.PROVISIONING / "dashboards" / "microfactory.yaml").read_text())
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path == "/etc/grafana/provisioning/dashboards/microfactory"
    readme = (grafana.DASHBOARDS / "README.md").read_text()
    assert path in readme and "/etc/grafana/provisioning" in readme, (
        "the README must say where the dashboards and the provisioning are mounted"
    )


# --------------------------------------------------------------------------- structure
def test_dashboards_are_what_the_generator_writes() -> None:
    # the generator is a script beside the dashboards, not a module of the package
    sys.path.insert(0, str(grafana.DASHBOARDS / "tools"))
    try:
        build_dashboards = importlib.import_module("build_dashboards")
    finally:
        sys.path.pop(0)
    built = build_dashboards.build()
    on_disk = {p.name: p.read_text() for p in grafana.GRAFANA_DIR.glob("*.json")}
    assert set(on_disk) == set(built), "run dashboards/tools/build_dashboards.py"
    stale = [name for name in built if built[name] != on_disk[name]]
    assert not stale, f"{stale} differ from the generator: run dashboards/tools/build_dashboards.py"


def test_every_dashboard_has_an_influxql_and_a_flux_variant() -> None:
    assert {"overview.json", "machine.json", "energy.json"} <= set(INFLUXQL)
    assert {n.replace(".json", "-flux.json") for n in INFLUXQL} == set(FLUX)
    for name, d in INFLUXQL.items():
        f = FLUX[name.replace(".json", "-flux.json")]
        assert [p["title"] for p in grafana.iter_panels(d)] == [
            p["title"] for p in grafana.iter_panels(f)
        ], name
        assert [v["name"] for v in d["templating"]["list"]] == [
            v["name"] for v in f["templating"]["list"]
        ]


def test_dashboard_uids_and_titles_are_unique() -> None:
    uids = Counter(d["uid"] for d in DASHBOARDS.values())
    titles = Counter(d["title"] for d in DASHBOARDS.values())
    assert all(n == 1 for n in uids.values()), uids
    assert all(n == 1 for n in titles.values()), titles
    assert all(len(uid) <= 40 for uid in uids), "Grafana refuses uids over 40 characters"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboard_structure(name: str) -> None:
    d = DASHBOARDS[name]
    assert d["schemaVersion"] == 39
    assert d["uid"] and d["title"] and d["time"]["from"].startswith("now-")
    panels = list(grafana.iter_panels(d))
    assert panels, "a dashboard without panels"
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids: {ids}"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert all(isinstance(g[k], int) for k in ("x", "y", "w", "h")), p["title"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0, p["title"]
        assert g["x"] + g["w"] <= 24, f"{p['title']!r} is wider than the 24-column grid"
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                other = cells.setdefault((x, y), p["title"])
                assert other == p["title"], f"{p['title']!r} overlaps {other!r}"
        assert p["targets"], f"{p['title']!r} has no query"
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"])


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_datasources_exist_and_match_the_query_language(name: str) -> None:
    d = DASHBOARDS[name]
    provisioned = {ds["uid"]: ds for ds in _datasources()}
    want = "microfactory-flux" if grafana.is_flux(d) else "microfactory-influxql"
    refs = [p["datasource"] for p in grafana.iter_panels(d)]
    refs += [t["datasource"] for p in grafana.iter_panels(d) for t in p["targets"]]
    refs += [v["datasource"] for v in d["templating"]["list"] if v["type"] == "query"]
    for ref in refs:
        assert ref["uid"] in provisioned, f"datasource uid {ref['uid']!r} is not provisioned"
        assert ref["uid"] == want, f"{name} mixes query languages: {ref['uid']}"
        assert ref["type"] == provisioned[ref["uid"]]["type"]
    for p in grafana.iter_panels(d):
        for t in p["targets"]:
            if not grafana.is_flux(d):
                assert t["rawQuery"] is True, f"{p['title']!r}: raw InfluxQL expected"
                assert t["resultFormat"] in ("time_series", "table")


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_template_variables_are_defined_and_used(name: str) -> None:
    d = DASHBOARDS[name]
    defined = [v["name"] for v in d["templating"]["list"]]
    assert defined[:2] == ["site", "machine"], "site and machine come first"
    text = json.dumps(d["panels"])
    used = set()
    for i, var in enumerate(d["templating"]["list"]):
        refs = grafana.variables_used(var["query"]) - grafana.GRAFANA_GLOBALS
        assert refs <= set(defined[:i]), f"variable {var['name']} uses later/unknown {refs}"
        used |= refs
    for t in grafana.targets(name, d):
        refs = grafana.variables_used(t.query) - grafana.GRAFANA_GLOBALS
        assert refs <= set(defined), f"{t.label} uses undefined {refs - set(defined)}"
        used |= refs
    assert set(defined) <= used, f"defined but never used: {set(defined) - used}"
    assert "$machine" in text or "${machine" in text


@pytest.mark.parametrize("name", sorted(INFLUXQL))
def test_influxql_queries_filter_by_time_and_site(name: str) -> None:
    for t in grafana.targets(name, INFLUXQL[name]):
        if t.where.startswith("variable"):
            assert t.query.startswith("SHOW TAG VALUES"), t.label
            continue
        selects = t.query.count("SELECT")
        # every SELECT, subqueries included, is bounded in time: InfluxDB would scan all
        assert t.query.count("$timeFilter") >= selects, f"{t.label}: a SELECT without $timeFilter"
        assert '"site" =~ /^$site$/' in t.query, f"{t.label}: not filtered by $site"
        assert not re.search(r"(?<!\")\border\b(?!\")", t.query), (
            f"{t.label}: the tag order is an InfluxQL keyword and must be double-quoted"
        )


# --------------------------------------------------------------------------- InfluxQL, real data
@pytest.fixture(scope="module")
@starts_server("Mosquitto, InfluxDB 1.x and the simulated workshop")
def workshop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[WorkshopRun, Path]]:
    """One accelerated run of the simulated workshop, shared by this module's tests."""
    tmp_path = tmp_path_factory.mktemp("dashboards")
    mosquitto = Mosquitto(tmp_path / "mosquitto")
    influxdb = InfluxDB1(tmp_path / "influxdb")
    with mosquitto, influxdb:
        run = asyncio.run(run_workshop(tmp_path, mosquitto, influxdb))
        yield run, tmp_path / "truth"


def _time_range(run: WorkshopRun) -> tuple[int, int]:
    """The dashboard's time range: the whole simulated run (its clock runs ahead of ours)."""
    return run.start_ns // 1_000_000 - 60_000, run.end_ns // 1_000_000 + 60_000


def _query(run: WorkshopRun, d: dict[str, Any], t: Target, values: dict[str, list[str]]) -> Any:
    start_ms, end_ms = _time_range(run)
    q = grafana.interpolate_influxql(
        t.query,
        d,
        values,
        start_ms=start_ms,
        end_ms=end_ms,
        interval=grafana.effective_interval(AUTO_INTERVAL, t.min_interval),
    )
    return run.influxdb.rows(q, run.database)


def _resolve_variables(
    run: WorkshopRun, name: str, choose: dict[str, list[str]] | None = None
) -> dict[str, list[str]]:
    """Run the variable queries in order, as Grafana does; All unless ``choose`` says."""
    d = INFLUXQL[name]
    values: dict[str, list[str]] = {}
    for var in d["templating"]["list"]:
        t = Target(name, f"variable {var['name']}", var["query"])
        found = [row["value"] for row in _query(run, d, t, values)]
        assert found, f"{t.label} found no values: {t.query}"
        values[var["name"]] = found if var["multi"] else found[:1]
        if choose and var["name"] in choose:
            assert set(choose[var["name"]]) <= set(found), (var["name"], found)
            values[var["name"]] = choose[var["name"]]
    return values


def _panel_query(name: str, title: str) -> Target:
    (t,) = [t for t in grafana.targets(name, INFLUXQL[name]) if f" {title!r} " in t.where]
    return t


@pytest.mark.integration
def test_the_run_wrote_context_tagged_data(workshop: tuple[WorkshopRun, Path]) -> None:
    run, _ = workshop
    assert run.dead_lettered == 0
    assert run.end_ns - run.start_ns > 8 * 60 * 1e9, "the simulated run is shorter than expected"
    for name in INFLUXQL:
        values = _resolve_variables(run, name)
        assert values["site"] == [SITE]
        assert set(values["machine"]) == set(MACHINES) or values["machine"][0] in MACHINES
        if "batch" in values:
            assert sorted(values["batch"]) == sorted(BATCHES)


@pytest.mark.integration
@pytest.mark.parametrize("name", sorted(INFLUXQL))
def test_every_influxql_query_returns_rows(workshop: tuple[WorkshopRun, Path], name: str) -> None:
    """All machines where the dashboard takes several; the mill (it has every signal) if one."""
    run, _ = workshop
    machine = INFLUXQL[name]["templating"]["list"][1]
    values = _resolve_variables(run, name, None if machine["multi"] else {"machine": ["mill-1"]})
    empty = []
    for t in grafana.targets(name, INFLUXQL[name]):
        if not _query(run, INFLUXQL[name], t, values):
            empty.append(t.label)
    assert not empty, f"queries returning no rows with {values}: {empty}"


@pytest.mark.integration
@pytest.mark.parametrize("machine", MACHINES)
def test_machine_detail_shows_only_the_chosen_machine(
    workshop: tuple[WorkshopRun, Path], machine: str
) -> None:
    run, _ = workshop
    values = _resolve_variables(run, "machine.json", {"machine": [machine]})
    d = INFLUXQL["machine.json"]
    for t in grafana.targets("machine.json", d):
        rows = _query(run, d, t, values)  # no error, even where a machine lacks a signal
        machines = {r["machine"] for r in rows if "machine" in r}
        assert machines <= {machine}, f"{t.label} leaks other machines: {machines}"
    for title in ("Power", "Energy counter", "Samples by quality"):
        assert _query(run, d, _panel_query("machine.json", title), values), (machine, title)
    if machine != "meter-1":  # the meter reports no state
        assert _query(run, d, _panel_query("machine.json", "Machine state"), values), machine


@pytest.mark.integration
def test_energy_for_one_batch_on_several_machines(workshop: tuple[WorkshopRun, Path]) -> None:
    run, _ = workshop
    choose = {"machine": ["mill-1", "laser-1"], "batch": ["SO-1001-B2"]}
    values = _resolve_variables(run, "energy.json", choose)
    d = INFLUXQL["energy.json"]
    for t in grafana.targets("energy.json", d):
        assert _query(run, d, t, values), f"{t.label} returns no rows for {choose}"
    rows = _query(run, d, _panel_query("energy.json", "kWh per batch"), values)
    assert [r["batch"] for r in rows] == ["SO-1001-B2"]
    table = _query(run, d, _panel_query("energy.json", "Energy per part by batch"), values)
    assert {(r["order"], r["batch"]) for r in table} == {("SO-1001", "SO-1001-B2")}
    assert {r["machine"] for r in table} <= {"mill-1", "laser-1"}


@pytest.mark.integration
def test_energy_dashboard_numbers_make_sense(workshop: tuple[WorkshopRun, Path]) -> None:
    run, _ = workshop
    values = _resolve_variables(run, "energy.json")
    d = INFLUXQL["energy.json"]
    per_batch = {
        r["batch"]: r["kWh"]
        for r in _query(run, d, _panel_query("energy.json", "kWh per batch"), values)
    }
    per_order = {
        r["order"]: r["kWh"]
        for r in _query(run, d, _panel_query("energy.json", "kWh per order"), values)
    }
    assert set(per_batch) == set(BATCHES) and all(v > 0 for v in per_batch.values()), per_batch
    assert set(per_order) == set(ORDERS), per_order
    # an order's energy is the energy of its batches
    for order in ORDERS:
        batches = sum(v for b, v in per_batch.items() if b.startswith(order))
        assert per_order[order] == pytest.approx(batches, rel=1e-9), order
    trend = _query(run, d, _panel_query("energy.json", "Energy per part trend"), values)
    assert all(r["wh_per_part"] > 0 for r in trend)
    assert {r["machine"] for r in trend} <= {"mill-1", "laser-1", "printer-1", "assembly-1"}


@pytest.mark.integration
def test_overview_matches_the_machines_ground_truth(workshop: tuple[WorkshopRun, Path]) -> None:
    run, truth_dir = workshop
    truth = load_truth(truth_dir)
    values = _resolve_variables(run, "overview.json")
    d = INFLUXQL["overview.json"]
    states = _query(run, d, _panel_query("overview.json", "Machine state"), values)
    seen = {r["state"] for r in states if r["state"] is not None}
    assert seen and seen <= set(MACHINE_STATES), seen
    assert "running" in seen
    table = {
        r["machine"]: r
        for r in _query(
            run, d, _panel_query("overview.json", "Parts and energy in the time range"), values
        )
    }
    assert set(table) == set(MACHINES)
    for machine in ("mill-1", "laser-1", "assembly-1"):
        good = sum(1 for p in truth.parts_of(machine) if p.good)
        assert good > 0, f"{machine} made no good part: the run is too short to check"
        assert table[machine]["good"] == good, (machine, table[machine], good)
    hourly = _query(run, d, _panel_query("overview.json", "Good parts per hour"), values)
    by_machine = Counter[str]()
    for r in hourly:
        by_machine[r["machine"]] += int(r["sum"])
    assert by_machine["laser-1"] == table["laser-1"]["good"]


# --------------------------------------------------------------------------- Flux
def _flux_values(d: dict[str, Any]) -> dict[str, list[str]]:
    machine = d["templating"]["list"][1]
    return {
        "site": [SITE],
        "machine": ["mill-1", "laser-1"] if machine["multi"] else ["mill-1"],
        "batch": ["SO-1001-B1", "SO-1001-B2"],
    }


def _flux_scripts() -> list[tuple[str, str, str]]:
    """(label, query as written, query as Grafana would send it) for every Flux query."""
    start = grafana.from_ns(1_790_000_000_000_000_000)
    out = []
    for name, d in FLUX.items():
        for t in grafana.targets(name, d):
            sent = grafana.interpolate_flux(
                t.query,
                d,
                _flux_values(d),
                start=start,
                stop=start + timedelta(hours=24),
                window=grafana.effective_interval(AUTO_INTERVAL, t.min_interval),
                bucket="microfactory",
                org="microfactory",
            )
            out.append((t.label, t.query, sent))
    return out


@pytest.fixture(scope="module")
def flux_checker() -> Any:
    """Run check.mjs (InfluxData's Flux language server, WebAssembly) over Flux scripts."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("Node.js is not installed: the Flux semantic check needs it")
    if not (FLUX_CHECK / "node_modules" / "@influxdata" / "flux-lsp-browser").exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to install the Flux checker (dashboards/tools/flux-check)"
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=FLUX_CHECK,
            check=True,
            timeout=300,
        )

    def check(scripts: list[str]) -> list[dict[str, Any]]:
        proc = subprocess.run(
            [node, str(FLUX_CHECK / "check.mjs")],
            input=json.dumps(scripts),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"flux check failed:\n{proc.stderr[-3000:]}"
        results: list[dict[str, Any]] = json.loads(proc.stdout)
        return results

    return check


def test_flux_checker_rejects_broken_queries(flux_checker: Any) -> None:
    """The checker is not a rubber stamp: each of these mistakes is caught."""
    good = (
        'from(bucket: "b") |> range(start: 2026-01-01T00:00:00Z, stop: 2026-01-02T00:00:00Z)'
        ' |> filter(fn: (r) => contains(value: r.machine, set: ["a"]))'
        " |> aggregateWindow(every: 10s, fn: mean, createEmpty: false)"
    )
    broken = [
        good.replace("createEmpty: false)", "createEmpty: false"),  # unbalanced
        good.replace("aggregateWindow", "aggregateWindw"),  # unknown function
        good.replace("every: 10s", 'every: "10s"'),  # string for a duration
        good.replace('set: ["a"]', 'set: "a"'),  # a single value where a list is needed
        good.replace("createEmpty", "createEmtpy"),  # unknown parameter
        'schema.tagValues(bucket: "b", tag: "machine")',  # missing import
    ]
    results = flux_checker([good, *broken])
    assert results[0] == {"valid": True, "parse_errors": []}
    for script, r in zip(broken, results[1:], strict=True):
        assert not r["valid"], f"the checker accepted: {script}"


def test_every_flux_query_parses_and_type_checks(flux_checker: Any) -> None:
    scripts = _flux_scripts()
    assert len(scripts) >= 25
    results = flux_checker([sent for _, _, sent in scripts])
    bad = [
        f"{label}: {r['parse_errors'] or 'semantic check failed'}\n{sent}"
        for (label, _, sent), r in zip(scripts, results, strict=True)
        if not r["valid"] or r["parse_errors"]
    ]
    assert not bad, "\n\n".join(bad)


def _balanced(text: str) -> bool:
    stack: list[str] = []
    pairs = {")": "(", "]": "[", "}": "{"}
    in_string = False
    prev = ""
    for ch in text:
        if ch == '"' and prev != "\\":
            in_string = not in_string
        elif not in_string and ch in "([{":
            stack.append(ch)
        elif not in_string and ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
        prev = ch
    return not stack and not in_string


@pytest.mark.parametrize("label,query,sent", _flux_scripts(), ids=lambda v: str(v)[:60])
def test_flux_query_shape(label: str, query: str, sent: str) -> None:
    """What holds without any Flux tooling: balanced, bounded in time, known functions."""
    assert _balanced(query), f"{label}: unbalanced brackets or quotes"
    if "variable" in label:
        assert 'import "influxdata/influxdb/schema"' in query
        assert "schema.tagValues(" in query and "start: v.timeRangeStart" in query
        return
    sources = re.findall(r"from\(bucket: ([^)]*)\)\s*\|>\s*range\(([^)]*)\)", query)
    assert sources and len(sources) == query.count("from("), (
        f"{label}: every from() must be followed at once by range()"
    )
    for bucket, rng in sources:
        assert bucket == "v.defaultBucket", f"{label}: bucket {bucket}, not the datasource's"
        assert rng == "start: v.timeRangeStart, stop: v.timeRangeStop", f"{label}: {rng}"
    called = set(re.findall(r"([A-Za-z_][\w.]*)\(", query)) - {"fn"}
    assert called <= FLUX_FUNCTIONS, f"{label}: unknown functions {called - FLUX_FUNCTIONS}"
    assert 'r._measurement == "telemetry"' in query
    assert "${site:json}" in query, f"{label}: not filtered by site"
    assert "v.windowPeriod" in query or "$__interval" not in query
