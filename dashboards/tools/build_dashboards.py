"""Write the Grafana dashboards in ``dashboards/provisioning/dashboards/microfactory/`` from one description.

Each panel is described once with its InfluxQL query (InfluxDB 1.x datasource) and its Flux
query (InfluxDB 2.x datasource); this script renders one JSON file per dashboard and query
language, so the two variants never drift apart. Edit this file, then run

    .venv/bin/python dashboards/tools/build_dashboards.py

``tests/dashboards`` fails when the JSON files are not what this script writes.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

OUT_DIR = Path(__file__).resolve().parents[1] / "provisioning" / "dashboards" / "microfactory"
SCHEMA_VERSION = 39
INFLUXQL_UID = "microfactory-influxql"
FLUX_UID = "microfactory-flux"
Lang = Literal["influxql", "flux"]

# Colours of the machine states (contract.MACHINE_STATES), the same as the operator UI's.
STATE_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "running": {"color": "green", "index": 0, "text": "running"},
            "idle": {"color": "yellow", "index": 1, "text": "idle"},
            "setup": {"color": "blue", "index": 2, "text": "setup"},
            "fault": {"color": "red", "index": 3, "text": "fault"},
            "off": {"color": "#808080", "index": 4, "text": "off"},
        },
    }
]


# --------------------------------------------------------------------------- query text
# InfluxQL: identifiers always double-quoted ("order" is a keyword), tag values single-quoted,
# template variables always in the regex form =~ /^$var$/ so one, several or All all work.
def _where(*conds: str, machine: bool = True) -> str:
    parts = ['"site" =~ /^$site$/']
    if machine:
        parts.append('"machine" =~ /^$machine$/')
    parts += [*conds, "$timeFilter"]
    return " AND ".join(parts)


def _sig(signal: str) -> str:
    return f"\"signal\" = '{signal}'"


def _diff(alias: str, signal: str, by: str = '"machine"', *extra: str) -> str:
    """Counter increments (a reset to zero is skipped, not counted as a negative step)."""
    return (
        f'SELECT non_negative_difference("value") AS "{alias}" FROM "telemetry" '
        f"WHERE {_where(_sig(signal), *extra)} GROUP BY {by}"
    )


BATCH_FILTER = '"batch" =~ /^$batch$/'
BY_MACHINE = '"machine"'
BY_BATCH = '"batch"'
BY_ORDER_BATCH_MACHINE = '"order", "batch", "machine"'

# Flux: Grafana replaces v.defaultBucket, v.timeRangeStart/Stop and v.windowPeriod itself;
# multi-value variables arrive as JSON arrays (${var:json}), a single value as "${var}".
FLUX_FROM = (
    "from(bucket: v.defaultBucket)\n  |> range(start: v.timeRangeStart, stop: v.timeRangeStop)\n"
)


def _flux_filter(field: str, signal_cond: str, machine: str = "multi") -> str:
    machine_cond = (
        "contains(value: r.machine, set: ${machine:json})"
        if machine == "multi"
        else 'r.machine == "${machine}"'
    )
    return (
        f'  |> filter(fn: (r) => r._measurement == "telemetry" and r._field == "{field}"'
        f" and {signal_cond})\n"
        f"  |> filter(fn: (r) => contains(value: r.site, set: ${{site:json}}) and {machine_cond})\n"
    )


def _flux_group(column: str) -> str:
    """One table per ``column`` (context tags split series), in time order again."""
    return f'  |> group(columns: ["{column}"])\n  |> sort(columns: ["_time"])\n'


def _flux_signal(signal: str) -> str:
    return f'r.signal == "{signal}"'


def _flux_counter_fn(name: str, by: str, machine: str = "multi", extra: str = "") -> str:
    """A Flux function: the increments of one counter signal, grouped by ``by``."""
    return (
        f"{name} = (signal) =>\n"
        + FLUX_FROM.replace("from(", "  from(").replace("\n  |>", "\n    |>")
        + _flux_filter("value", "r.signal == signal", machine).replace("  |>", "    |>")
        + extra.replace("  |>", "    |>")
        + f"    |> group(columns: [{by}])\n"
        '    |> sort(columns: ["_time"])\n'
        "    |> difference(nonNegative: true)\n"
    )


# --------------------------------------------------------------------------- panels
@dataclass
class Query:
    influxql: str
    flux: str
    alias: str = ""
    fmt: Literal["time_series", "table"] = "time_series"


@dataclass
class Panel:
    title: str
    type: str
    grid: tuple[int, int, int, int]  # x, y, w, h
    queries: list[Query]
    unit: str = ""
    description: str = ""
    interval: str = ""  # minimum $__interval / v.windowPeriod
    decimals: int | None = None
    mappings: list[dict[str, Any]] = field(default_factory=list)
    custom: dict[str, Any] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    transformations: list[dict[str, Any]] = field(default_factory=list)


def _ds(lang: Lang) -> dict[str, str]:
    return {"type": "influxdb", "uid": INFLUXQL_UID if lang == "influxql" else FLUX_UID}


def _render_panel(p: Panel, pid: int, lang: Lang) -> dict[str, Any]:
    targets = []
    for i, q in enumerate(p.queries):
        ref = chr(ord("A") + i)
        if lang == "influxql":
            t: dict[str, Any] = {
                "datasource": _ds(lang),
                "refId": ref,
                "rawQuery": True,
                "query": q.influxql,
                "resultFormat": q.fmt,
            }
            if q.alias:
                t["alias"] = q.alias
        else:
            t = {"datasource": _ds(lang), "refId": ref, "query": q.flux}
        targets.append(t)
    defaults: dict[str, Any] = {"custom": dict(p.custom)}
    if p.unit:
        defaults["unit"] = p.unit
    if p.decimals is not None:
        defaults["decimals"] = p.decimals
    if p.mappings:
        defaults["mappings"] = p.mappings
    defaults.setdefault("mappings", [])
    defaults["color"] = {"mode": "palette-classic"} if not p.mappings else {"mode": "fixed"}
    x, y, w, h = p.grid
    out: dict[str, Any] = {
        "id": pid,
        "type": p.type,
        "title": p.title,
        "description": p.description,
        "datasource": _ds(lang),
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": p.options,
        "targets": targets,
    }
    if p.interval:
        out["interval"] = p.interval
    if p.transformations:
        out["transformations"] = p.transformations
    return out


def _var(
    name: str,
    label: str,
    influxql: str,
    flux: str,
    lang: Lang,
    *,
    multi: bool = True,
) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": _ds(lang),
        "query": influxql if lang == "influxql" else flux,
        "definition": influxql if lang == "influxql" else flux,
        "refresh": 2,  # on time range change: new machines and batches appear
        "multi": multi,
        "includeAll": multi,
        "current": {},
        "options": [],
        "sort": 1,
        "hide": 0,
        "regex": "",
        "skipUrlSync": False,
    }


FLUX_TAG_VALUES = (
    'import "influxdata/influxdb/schema"\n\n'
    "schema.tagValues(\n"
    "  bucket: v.defaultBucket,\n"
    '  tag: "{tag}",\n'
    '  predicate: (r) => r._measurement == "telemetry"{pred},\n'
    "  start: v.timeRangeStart,\n"
    "  stop: v.timeRangeStop,\n"
    ")"
)


def _site_var(lang: Lang) -> dict[str, Any]:
    return _var(
        "site",
        "Site",
        'SHOW TAG VALUES FROM "telemetry" WITH KEY = "site"',
        FLUX_TAG_VALUES.format(tag="site", pred=""),
        lang,
    )


def _machine_var(lang: Lang, *, multi: bool) -> dict[str, Any]:
    return _var(
        "machine",
        "Machine",
        'SHOW TAG VALUES FROM "telemetry" WITH KEY = "machine" WHERE "site" =~ /^$site$/',
        FLUX_TAG_VALUES.format(
            tag="machine", pred=" and contains(value: r.site, set: ${site:json})"
        ),
        lang,
        multi=multi,
    )


def _batch_var(lang: Lang) -> dict[str, Any]:
    return _var(
        "batch",
        "Batch",
        'SHOW TAG VALUES FROM "telemetry" WITH KEY = "batch" '
        'WHERE "site" =~ /^$site$/ AND "machine" =~ /^$machine$/',
        FLUX_TAG_VALUES.format(
            tag="batch",
            pred=" and contains(value: r.site, set: ${site:json})"
            " and contains(value: r.machine, set: ${machine:json})",
        ),
        lang,
    )


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    panels: list[Panel]
    variables: list[Any]  # callables: lang -> variable
    time_from: str = "now-24h"


def render(d: Dashboard, lang: Lang) -> dict[str, Any]:
    suffix = "" if lang == "influxql" else "-flux"
    title_suffix = "" if lang == "influxql" else " (Flux)"
    return {
        "uid": d.uid + suffix,
        "title": d.title + title_suffix,
        "description": d.description,
        "tags": ["microfactory", "influxql" if lang == "influxql" else "flux"],
        "timezone": "browser",
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "time": {"from": d.time_from, "to": "now"},
        "timepicker": {},
        "fiscalYearStartMonth": 0,
        "liveNow": False,
        "weekStart": "",
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "title": "microfactory",
                "tags": ["microfactory", "influxql" if lang == "influxql" else "flux"],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "icon": "external link",
                "targetBlank": False,
                "tooltip": "",
                "url": "",
            }
        ],
        "templating": {"list": [v(lang) for v in d.variables]},
        "panels": [_render_panel(p, i + 1, lang) for i, p in enumerate(d.panels)],
    }


# --------------------------------------------------------------------------- shared panels
TIMESERIES = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "spanNulls": False}
BARS = {"drawStyle": "bars", "fillOpacity": 80, "lineWidth": 1}
STACK_NONE = {"stacking": {"mode": "none", "group": "A"}}
TABLE_SORTED = {"showHeader": True, "cellHeight": "sm", "footer": {"show": False}}
BARCHART = {
    "orientation": "horizontal",
    "showValue": "auto",
    "xTickLabelRotation": 0,
    "legend": {"displayMode": "list", "placement": "bottom", "showLegend": False},
}
HIDE_TIME = [{"id": "organize", "options": {"excludeByName": {"Time": True, "time": True}}}]


def state_timeline(grid: tuple[int, int, int, int], machine: str = "multi") -> Panel:
    cond = 'r.signal == "state"'
    return Panel(
        "Machine state",
        "state-timeline",
        grid,
        [
            Query(
                'SELECT last("text") AS "state" FROM "telemetry" '
                f"WHERE {_where(_sig('state'))} "
                'GROUP BY time($__interval), "machine" fill(previous)',
                FLUX_FROM
                + _flux_filter("text", cond, machine)
                + _flux_group("machine")
                + "  |> aggregateWindow(every: v.windowPeriod, fn: last, createEmpty: false)\n"
                '  |> yield(name: "state")',
                alias="$tag_machine",
            )
        ],
        description="What each machine reported (off / idle / setup / running / fault), "
        "the last state in each interval.",
        mappings=STATE_MAPPINGS,
        custom={"fillOpacity": 80, "lineWidth": 0},
        options={
            "showValue": "auto",
            "mergeValues": True,
            "rowHeight": 0.8,
            "alignValue": "left",
            "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        },
    )


def power_panel(grid: tuple[int, int, int, int], machine: str = "multi") -> Panel:
    return Panel(
        "Active power",
        "timeseries",
        grid,
        [
            Query(
                'SELECT mean("value") FROM "telemetry" '
                f"WHERE {_where(_sig('power_active'))} "
                'GROUP BY time($__interval), "machine" fill(none)',
                FLUX_FROM
                + _flux_filter("value", _flux_signal("power_active"), machine)
                + _flux_group("machine")
                + "  |> aggregateWindow(every: v.windowPeriod, fn: mean, createEmpty: false)\n"
                '  |> yield(name: "power")',
                alias="$tag_machine",
            )
        ],
        unit="watt",
        description="Mean active power per machine in each interval (the main meter is the "
        "whole workshop).",
        custom={**TIMESERIES, **STACK_NONE},
    )


def in_range_table(grid: tuple[int, int, int, int], machine: str = "multi") -> Panel:
    influxql = (
        'SELECT sum("good") AS "good", sum("scrap") AS "scrap", sum("e") / 1000 AS "kWh" '
        f"FROM ({_diff('good', 'good_count')}), ({_diff('scrap', 'scrap_count')}), "
        f"({_diff('e', 'energy_active')}) "
        'WHERE $timeFilter GROUP BY "machine"'
    )
    flux = (
        _flux_counter_fn("increments", '"machine"', machine) + "    |> sum()\n"
        '    |> set(key: "_field", value: signal)\n\n'
        "union(tables: [\n"
        '  increments(signal: "good_count"),\n'
        '  increments(signal: "scrap_count"),\n'
        '  increments(signal: "energy_active"),\n'
        "])\n"
        "  |> group()\n"
        '  |> pivot(rowKey: ["machine"], columnKey: ["_field"], valueColumn: "_value")\n'
        "  |> map(fn: (r) => ({machine: r.machine, good: r.good_count, scrap: r.scrap_count,"
        " kWh: r.energy_active / 1000.0}))"
    )
    return Panel(
        "Parts and energy in the time range",
        "table",
        grid,
        [Query(influxql, flux, fmt="table")],
        description="Good and scrapped parts and kWh used per machine in the selected time "
        "range, from the machines' counters (a counter reset is not counted as a loss).",
        decimals=2,
        options=TABLE_SORTED,
        transformations=HIDE_TIME,
    )


# --------------------------------------------------------------------------- dashboards
def overview() -> Dashboard:
    now_state = Panel(
        "State now",
        "stat",
        (0, 8, 12, 5),
        [
            Query(
                'SELECT last("text") AS "state" FROM "telemetry" '
                f'WHERE {_where(_sig("state"))} GROUP BY "machine"',
                FLUX_FROM
                + _flux_filter("text", _flux_signal("state"))
                + _flux_group("machine")
                + "  |> last()",
                alias="$tag_machine",
            )
        ],
        description="The last state each machine reported.",
        mappings=STATE_MAPPINGS,
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/.*/", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "value_and_name",
            "orientation": "auto",
            "justifyMode": "auto",
        },
    )
    power_now = Panel(
        "Power now",
        "stat",
        (12, 8, 12, 5),
        [
            Query(
                'SELECT last("value") FROM "telemetry" '
                f'WHERE {_where(_sig("power_active"))} GROUP BY "machine"',
                FLUX_FROM
                + _flux_filter("value", _flux_signal("power_active"))
                + _flux_group("machine")
                + "  |> last()",
                alias="$tag_machine",
            )
        ],
        unit="watt",
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "value",
            "graphMode": "none",
            "textMode": "value_and_name",
            "orientation": "auto",
            "justifyMode": "auto",
        },
    )
    parts_per_hour = Panel(
        "Good parts per hour",
        "timeseries",
        (12, 13, 12, 9),
        [
            Query(
                'SELECT sum("good") FROM '
                f"({_diff('good', 'good_count')}) "
                'WHERE $timeFilter GROUP BY time(1h), "machine" fill(none)',
                _flux_counter_fn("increments", '"machine"') + "\n"
                'increments(signal: "good_count")\n'
                "  |> aggregateWindow(every: 1h, fn: sum, createEmpty: false)",
                alias="$tag_machine",
            )
        ],
        unit="short",
        description="Good parts completed in each clock hour, per machine "
        "(increments of good_count).",
        custom={**BARS, **STACK_NONE},
    )
    return Dashboard(
        "microfactory-overview",
        "microfactory — workshop overview",
        "Every machine of the workshop at a glance: state, power, output.",
        [
            state_timeline((0, 0, 24, 8)),
            now_state,
            power_now,
            power_panel((0, 13, 12, 9)),
            parts_per_hour,
            in_range_table((0, 22, 24, 7)),
        ],
        [_site_var, lambda lang: _machine_var(lang, multi=True)],
    )


def machine_detail() -> Dashboard:
    one = "single"

    def by_signal(
        title: str,
        cond_ql: str,
        cond_flux: str,
        grid: tuple[int, int, int, int],
        unit: str,
        agg: str = "mean",
    ) -> Panel:
        return Panel(
            title,
            "timeseries",
            grid,
            [
                Query(
                    f'SELECT {agg}("value") FROM "telemetry" WHERE {_where(cond_ql)} '
                    'GROUP BY time($__interval), "signal" fill(none)',
                    FLUX_FROM
                    + _flux_filter("value", cond_flux, one)
                    + _flux_group("signal")
                    + f"  |> aggregateWindow(every: v.windowPeriod, fn: {agg}, createEmpty: false)",
                    alias="$tag_signal",
                )
            ],
            unit=unit,
            custom={**TIMESERIES, **STACK_NONE},
        )

    program = Panel(
        "Program now",
        "stat",
        (0, 6, 6, 4),
        [
            Query(
                'SELECT last("text") AS "program" FROM "telemetry" '
                f"WHERE {_where(_sig('program'))}",
                FLUX_FROM
                + _flux_filter("text", _flux_signal("program"), one)
                + _flux_group("machine")
                + "  |> last()",
            )
        ],
        description="The NC program, job or recipe the machine reported last.",
        options={
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "/.*/", "values": False},
            "colorMode": "none",
            "graphMode": "none",
            "textMode": "value",
        },
    )
    batch_table = Panel(
        "Batches on this machine",
        "table",
        (12, 6, 12, 8),
        [
            Query(
                'SELECT sum("e") / 1000 AS "kWh", sum("p") AS "parts", '
                'sum("e") / sum("p") AS "Wh per part" '
                f"FROM ({_diff('e', 'energy_active', BY_BATCH)}), "
                f"({_diff('p', 'part_count', BY_BATCH)}) "
                'WHERE $timeFilter AND "batch" != \'\' GROUP BY "batch"',
                _flux_counter_fn(
                    "increments", '"batch"', one, "  |> filter(fn: (r) => exists r.batch)\n"
                )
                + "    |> sum()\n"
                '    |> set(key: "_field", value: signal)\n\n'
                'union(tables: [increments(signal: "energy_active"), '
                'increments(signal: "part_count")])\n'
                "  |> group()\n"
                '  |> pivot(rowKey: ["batch"], columnKey: ["_field"], valueColumn: "_value")\n'
                "  |> map(fn: (r) => ({batch: r.batch, kWh: r.energy_active / 1000.0,"
                " parts: r.part_count,"
                ' "Wh per part": if r.part_count > 0.0 then r.energy_active / r.part_count'
                " else 0.0}))",
                fmt="table",
            )
        ],
        description="Energy and parts per batch this machine worked on in the time range "
        "(batch tags come from the MES's machine context).",
        decimals=2,
        options=TABLE_SORTED,
        transformations=HIDE_TIME,
    )
    energy_per_interval = Panel(
        "Energy per interval",
        "timeseries",
        (0, 22, 12, 8),
        [
            Query(
                'SELECT sum("e") FROM '
                f"({_diff('e', 'energy_active')}) "
                "WHERE $timeFilter GROUP BY time($__interval) fill(none)",
                _flux_counter_fn("increments", '"machine"', one) + "\n"
                'increments(signal: "energy_active")\n'
                "  |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)",
                alias="energy",
            )
        ],
        unit="watth",
        interval="1m",
        description="Energy used in each interval, from the energy counter's increments "
        "(resets after a power loss are skipped).",
        custom={**BARS, **STACK_NONE},
    )
    counters = by_signal(
        "Part counters",
        '"signal" =~ /^(part_count|good_count|scrap_count)$/',
        'contains(value: r.signal, set: ["part_count", "good_count", "scrap_count"])',
        (12, 22, 12, 8),
        "short",
        agg="last",
    )
    quality = Panel(
        "Samples by quality",
        "timeseries",
        (0, 38, 24, 8),
        [
            Query(
                'SELECT count("value") FROM "telemetry" '
                f"WHERE {_where()} "
                'GROUP BY time($__interval), "quality" fill(none)',
                FLUX_FROM
                + _flux_filter("value", "true", one)
                + _flux_group("quality")
                + "  |> aggregateWindow(every: v.windowPeriod, fn: count, createEmpty: false)",
                alias="$tag_quality",
            )
        ],
        unit="short",
        interval="1m",
        description="Numeric samples received per interval by quality: anything but 'good' "
        "means the source was uncertain or lost.",
        custom={**BARS, "stacking": {"mode": "normal", "group": "A"}},
    )
    return Dashboard(
        "microfactory-machine",
        "microfactory — machine detail",
        "One machine: state, program, power, energy, counters, temperatures, process signals "
        "and the batches it worked on.",
        [
            state_timeline((0, 0, 24, 6), one),
            program,
            Panel(
                "Power now",
                "stat",
                (6, 6, 6, 4),
                [
                    Query(
                        'SELECT last("value") FROM "telemetry" '
                        f"WHERE {_where(_sig('power_active'))}",
                        FLUX_FROM
                        + _flux_filter("value", _flux_signal("power_active"), one)
                        + _flux_group("machine")
                        + "  |> last()",
                    )
                ],
                unit="watt",
                options={
                    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                    "colorMode": "value",
                    "graphMode": "area",
                    "textMode": "value",
                },
            ),
            in_range_table((0, 10, 12, 4), one),
            batch_table,
            by_signal(
                "Power",
                '"signal" =~ /^power_/',
                "r.signal =~ /^power_/",
                (0, 14, 12, 8),
                "watt",
            ),
            by_signal(
                "Energy counter",
                _sig("energy_active"),
                _flux_signal("energy_active"),
                (12, 14, 12, 8),
                "watth",
                agg="last",
            ),
            energy_per_interval,
            counters,
            by_signal(
                "Temperatures",
                '"signal" =~ /^temperature/',
                "r.signal =~ /^temperature/",
                (0, 30, 12, 8),
                "celsius",
            ),
            by_signal(
                "Process signals",
                '"signal" =~ /^(spindle_speed|laser_power|feed_rate|torque)$/',
                'contains(value: r.signal, set: ["spindle_speed", "laser_power", "feed_rate", '
                '"torque"])',
                (12, 30, 12, 8),
                "",
            ),
            quality,
        ],
        [_site_var, lambda lang: _machine_var(lang, multi=False)],
    )


def energy() -> Dashboard:
    def kwh_by(tag: str, title: str, grid: tuple[int, int, int, int], batch: bool) -> Panel:
        extra_ql = (BATCH_FILTER,) if batch else ()
        extra_flux = (
            "  |> filter(fn: (r) => exists r.batch and contains(value: r.batch, set: ${batch:json}))\n"
            if batch
            else f"  |> filter(fn: (r) => exists r.{tag} and exists r.batch)\n"
        )
        tag_ql = f'"{tag}"'
        # increments within one batch on one machine: a step across a batch change is
        # nobody's, so an order's kWh is exactly the sum of its batches'
        by = f"{tag_ql}, {BY_MACHINE}" if tag == "batch" else f'{tag_ql}, "batch", {BY_MACHINE}'
        by_flux = '"machine", "batch"' if tag == "batch" else f'"machine", "batch", "{tag}"'
        return Panel(
            title,
            "barchart",
            grid,
            [
                Query(
                    'SELECT sum("e") / 1000 AS "kWh" FROM '
                    f"({_diff('e', 'energy_active', by, *extra_ql)}) "
                    f"WHERE $timeFilter AND {tag_ql} != '' GROUP BY {tag_ql}",
                    _flux_counter_fn("increments", by_flux, extra=extra_flux) + "\n"
                    'increments(signal: "energy_active")\n'
                    f'  |> group(columns: ["{tag}"])\n'
                    "  |> sum()\n"
                    "  |> group()\n"
                    f"  |> map(fn: (r) => ({{{tag}: r.{tag}, kWh: r._value / 1000.0}}))",
                    fmt="table",
                )
            ],
            unit="kwatth",
            decimals=2,
            description=f"kWh used while machines worked on each {tag} (counter increments of "
            "every machine tagged with it by the MES context).",
            options={**BARCHART, "xField": tag},
            transformations=HIDE_TIME,
        )

    batch_table = Panel(
        "Energy per part by batch",
        "table",
        (0, 8, 24, 7),
        [
            Query(
                'SELECT sum("e") / 1000 AS "kWh", sum("p") AS "parts", '
                'sum("e") / sum("p") AS "Wh per part" FROM '
                f"({_diff('e', 'energy_active', BY_ORDER_BATCH_MACHINE, BATCH_FILTER)}), "
                f"({_diff('p', 'part_count', BY_ORDER_BATCH_MACHINE, BATCH_FILTER)}) "
                'WHERE $timeFilter GROUP BY "order", "batch", "machine"',
                _flux_counter_fn(
                    "increments",
                    '"order", "batch", "machine"',
                    extra="  |> filter(fn: (r) => exists r.batch and contains(value: r.batch, set: ${batch:json}))\n",
                )
                + "    |> sum()\n"
                '    |> set(key: "_field", value: signal)\n\n'
                'union(tables: [increments(signal: "energy_active"), '
                'increments(signal: "part_count")])\n'
                "  |> group()\n"
                '  |> pivot(rowKey: ["order", "batch", "machine"], columnKey: ["_field"],'
                ' valueColumn: "_value")\n'
                "  |> map(fn: (r) => ({order: r.order, batch: r.batch, machine: r.machine,"
                " kWh: r.energy_active / 1000.0, parts: r.part_count,"
                ' "Wh per part": if r.part_count > 0.0 then r.energy_active / r.part_count'
                " else 0.0}))",
                fmt="table",
            )
        ],
        description="Per order, batch and machine: kWh used, parts completed and energy per "
        "part in the time range. The MES's batch record has the exact energy of every part.",
        decimals=2,
        options=TABLE_SORTED,
        transformations=HIDE_TIME,
    )
    per_part_trend = Panel(
        "Energy per part trend",
        "timeseries",
        (0, 15, 24, 9),
        [
            Query(
                'SELECT "wh_per_part" FROM (SELECT sum("e") / sum("p") AS "wh_per_part" FROM '
                f"({_diff('e', 'energy_active', BY_MACHINE, BATCH_FILTER)}), "
                f"({_diff('p', 'part_count', BY_MACHINE, BATCH_FILTER)}) "
                'WHERE $timeFilter GROUP BY time($__interval), "machine" fill(none)) '
                'WHERE "wh_per_part" > 0 AND $timeFilter GROUP BY "machine"',
                _flux_counter_fn(
                    "increments",
                    '"machine"',
                    extra="  |> filter(fn: (r) => exists r.batch and contains(value: r.batch, set: ${batch:json}))\n",
                )
                + "    |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)\n"
                '    |> set(key: "_field", value: signal)\n\n'
                'union(tables: [increments(signal: "energy_active"), '
                'increments(signal: "part_count")])\n'
                '  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")\n'
                "  |> filter(fn: (r) => exists r.energy_active and exists r.part_count"
                " and r.part_count > 0.0)\n"
                "  |> map(fn: (r) => ({_time: r._time, machine: r.machine,"
                " _value: r.energy_active / r.part_count}))",
                alias="$tag_machine",
            )
        ],
        unit="watth",
        interval="5m",
        description="Energy used per part completed in each interval, per machine, for the "
        "selected batches (intervals without a completed part are left out).",
        custom={**TIMESERIES, "drawStyle": "points", "pointSize": 6, **STACK_NONE},
    )
    kwh_per_machine = Panel(
        "Energy per machine",
        "timeseries",
        (0, 24, 24, 8),
        [
            Query(
                'SELECT sum("e") / 1000 FROM '
                f"({_diff('e', 'energy_active')}) "
                'WHERE $timeFilter GROUP BY time($__interval), "machine" fill(none)',
                _flux_counter_fn("increments", '"machine"') + "\n"
                'increments(signal: "energy_active")\n'
                "  |> aggregateWindow(every: v.windowPeriod, fn: sum, createEmpty: false)\n"
                "  |> map(fn: (r) => ({r with _value: r._value / 1000.0}))",
                alias="$tag_machine",
            )
        ],
        unit="kwatth",
        interval="15m",
        description="kWh per machine in each interval, all work (with or without a batch). "
        "The main meter measures the whole workshop.",
        custom={**BARS, **STACK_NONE},
    )
    return Dashboard(
        "microfactory-energy",
        "microfactory — energy",
        "kWh per batch, order, product and operation, energy per part, energy per machine.",
        [
            kwh_by("batch", "kWh per batch", (0, 0, 6, 8), batch=True),
            kwh_by("order", "kWh per order", (6, 0, 6, 8), batch=False),
            kwh_by("product", "kWh per product", (12, 0, 6, 8), batch=False),
            kwh_by("operation", "kWh per operation", (18, 0, 6, 8), batch=False),
            batch_table,
            per_part_trend,
            kwh_per_machine,
        ],
        [_site_var, lambda lang: _machine_var(lang, multi=True), _batch_var],
        time_from="now-7d",
    )


DASHBOARDS = {"overview": overview, "machine": machine_detail, "energy": energy}


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard, both query languages."""
    out = {}
    for name, make in DASHBOARDS.items():
        d = make()
        for lang in ("influxql", "flux"):
            suffix = "" if lang == "influxql" else "-flux"
            out[f"{name}{suffix}.json"] = json.dumps(render(d, lang), indent=2) + "\n"
    return out


def main() -> int:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    files = build()
    for name, text in files.items():
        (OUT_DIR / name).write_text(text)
    stale = [p for p in OUT_DIR.glob("*.json") if p.name not in files]
    for p in stale:
        p.unlink()
    sys.stderr.write(f"wrote {len(files)} dashboards to {OUT_DIR}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
