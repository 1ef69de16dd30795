"""What Grafana does to a dashboard's queries before they reach InfluxDB, done here for tests.

InfluxQL: ``$timeFilter`` / ``$__timeFilter`` become ``time >= <from>ms and time <= <to>ms``,
``$__interval`` the panel's interval (never below the panel's minimum ``interval``), and a
template variable in ``=~ /^$var$/`` a regex: several values (or All) as ``(a|b)``, each value
regex-escaped, a single value of a single-value variable as it is.
Flux: ``v.timeRangeStart`` / ``v.timeRangeStop`` become time literals, ``v.windowPeriod`` a
duration, ``v.defaultBucket`` / ``v.organization`` the datasource's strings, ``${var:json}``
a JSON array (or a JSON string for a single-value variable) and ``${var}`` the value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "dashboards"
GRAFANA_DIR = DASHBOARDS / "provisioning" / "dashboards" / "microfactory"
PROVISIONING = DASHBOARDS / "provisioning"

# $name, ${name} or ${name:format}; Grafana's own global variables start with __
VAR_RE = re.compile(r"\$(?:\{(?P<braced>\w+)(?::(?P<fmt>\w+))?\}|(?P<plain>\w+))")
GRAFANA_GLOBALS = {"timeFilter", "__timeFilter", "__interval", "__interval_ms", "__range"}
_REGEX_SPECIAL = re.compile(r"[\\^$*+?.()|\[\]{}/]")


@dataclass(frozen=True)
class Target:
    """One query of a dashboard, where it is and what Grafana would send."""

    dashboard: str
    where: str  # "panel 3 'Active power' A" or "variable machine"
    query: str
    min_interval: str = ""

    @property
    def label(self) -> str:
        return f"{self.dashboard}: {self.where}"


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted(GRAFANA_DIR.glob("*.json"))
    }


def is_flux(dashboard: dict[str, Any]) -> bool:
    return "flux" in dashboard.get("tags", [])


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # collapsed rows hold their panels


def targets(name: str, dashboard: dict[str, Any]) -> list[Target]:
    """Every query of a dashboard: panel targets and query variables."""
    out = []
    for panel in iter_panels(dashboard):
        for t in panel.get("targets", []):
            where = f"panel {panel['id']} {panel.get('title', '')!r} {t.get('refId', '?')}"
            out.append(Target(name, where, t["query"], panel.get("interval", "")))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]
            out.append(
                Target(name, f"variable {var['name']}", q if isinstance(q, str) else q["query"])
            )
    return out


def variables_used(text: str) -> set[str]:
    names = set()
    for m in VAR_RE.finditer(text):
        names.add(m.group("braced") or m.group("plain"))
    return names


def grafana_regex_escape(value: str) -> str:
    return _REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value)


def _duration_s(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not m:
        raise ValueError(f"not a Grafana interval: {text!r}")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


def effective_interval(auto: str, min_interval: str) -> str:
    """Grafana's $__interval: the automatic one, never below the panel's minimum."""
    if min_interval and _duration_s(min_interval) > _duration_s(auto):
        return min_interval
    return auto


def _var_defs(dashboard: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


def _is_multi(var: dict[str, Any]) -> bool:
    return bool(var.get("multi") or var.get("includeAll"))


def interpolate_influxql(
    query: str,
    dashboard: dict[str, Any],
    values: dict[str, list[str]],
    *,
    start_ms: int,
    end_ms: int,
    interval: str,
) -> str:
    defs = _var_defs(dashboard)

    def sub(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        if name in ("timeFilter", "__timeFilter"):
            return f"time >= {start_ms}ms and time <= {end_ms}ms"
        if name == "__interval":
            return interval
        if name == "__interval_ms":
            return str(int(_duration_s(interval) * 1000))
        if name not in defs:
            raise KeyError(f"variable ${name} is not defined in the dashboard")
        chosen = values[name]
        if not _is_multi(defs[name]):
            assert len(chosen) == 1, f"${name} takes one value"
            return chosen[0]
        escaped = [grafana_regex_escape(v) for v in chosen]
        return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

    return VAR_RE.sub(sub, query)


def interpolate_flux(
    query: str,
    dashboard: dict[str, Any],
    values: dict[str, list[str]],
    *,
    start: datetime,
    stop: datetime,
    window: str,
    bucket: str,
    org: str,
) -> str:
    defs = _var_defs(dashboard)

    def sub(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("plain")
        if name not in defs:
            raise KeyError(f"variable ${name} is not defined in the dashboard")
        chosen = values[name]
        if m.group("fmt") == "json":
            return json.dumps(chosen if _is_multi(defs[name]) else chosen[0])
        if m.group("fmt") is not None:
            raise AssertionError(f"format :{m.group('fmt')} not handled by the test")
        assert len(chosen) == 1, f"${name} without :json needs a single value"
        return chosen[0]

    text = VAR_RE.sub(sub, query)

    def rfc3339(t: datetime) -> str:
        return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    text = text.replace("v.timeRangeStart", rfc3339(start))
    text = text.replace("v.timeRangeStop", rfc3339(stop))
    text = text.replace("v.windowPeriod", window)
    text = text.replace("v.defaultBucket", json.dumps(bucket))
    return text.replace("v.organization", json.dumps(org))


def from_ns(ns: int) -> datetime:
    return datetime.fromtimestamp(ns / 1e9, tz=UTC)
