"""``microfactory status``: a gateway's ``/metrics`` read back as one table per stage."""

from __future__ import annotations

import urllib.request
from collections import defaultdict

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from .metrics import PREFIX

Values = dict[str, dict[tuple[tuple[str, str], ...], float]]


def fetch(url: str, timeout_s: float = 5.0) -> Values:
    """Every sample of the exposition, by metric name (without prefix) and label set."""
    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        text = resp.read().decode()
    out: Values = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name.removeprefix(PREFIX + "_").removesuffix("_total")
            out[name][tuple(sorted(sample.labels.items()))] = sample.value
    return out


def _one(values: Values, name: str, **labels: str) -> float:
    return values.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def _labels(values: Values, name: str, key: str) -> list[str]:
    return sorted({dict(k)[key] for k in values.get(name, {}) if key in dict(k)})


def _devices_not_live(values: Values) -> list[tuple[str, str, str]]:
    """(adapter, device, state) of every device that is stale or offline, sorted."""
    out = []
    for key, v in values.get("device_state", {}).items():
        labels = dict(key)
        if v and labels.get("state") != "live":
            out.append((labels["adapter"], labels["device"], labels["state"]))
    return sorted(out)


def render(values: Values, console: Console) -> None:
    stages = Table(title="pipeline")
    for col in ("received", "normalised", "spooled", "refused", "dead-lettered", "gaps"):
        stages.add_column(col, justify="right")
    dead = sum(values.get("dead_lettered", {}).values())
    stages.add_row(
        *(f"{_one(values, n):,.0f}" for n in ("received", "normalised", "spooled", "refused")),
        f"{dead:,.0f}",
        f"{_one(values, 'gaps'):,.0f}",
    )
    console.print(stages)

    sinks = Table(title="sinks")
    for col in ("sink", "up", "delivered", "retried", "quarantined", "dropped", "depth", "oldest"):
        sinks.add_column(col, justify="left" if col in ("sink", "up") else "right")
    for sink in _labels(values, "spool_depth", "sink"):
        dropped = sum(v for k, v in values.get("dropped", {}).items() if dict(k)["sink"] == sink)
        up = _one(values, "sink_up", sink=sink)
        sinks.add_row(
            sink,
            "[green]yes[/]" if up else "[red]no[/]",
            f"{_one(values, 'delivered', sink=sink):,.0f}",
            f"{_one(values, 'retried', sink=sink):,.0f}",
            f"{_one(values, 'quarantined', sink=sink):,.0f}",
            f"{dropped:,.0f}",
            f"{_one(values, 'spool_depth', sink=sink):,.0f}",
            f"{_one(values, 'spool_oldest_age_seconds', sink=sink):,.1f} s",
        )
    console.print(sinks)

    adapters = Table(title="adapters")
    adapters.add_column("adapter")
    adapters.add_column("state")
    for adapter in _labels(values, "adapter_connected", "adapter"):
        states = [
            dict(k)["state"]
            for k, v in values.get("adapter_state", {}).items()
            if dict(k)["adapter"] == adapter and v
        ]
        state = states[0] if states else "unknown"
        colour = "green" if state == "connected" else "yellow" if state == "connecting" else "red"
        adapters.add_row(adapter, f"[{colour}]{state}[/]")
    console.print(adapters)
    devices = _devices_not_live(values)
    if devices:
        table = Table(title="devices not live")
        for col in ("adapter", "device", "state"):
            table.add_column(col)
        for adapter, device, state in devices:
            table.add_row(adapter, device, f"[red]{state}[/]")
        console.print(table)
    console.print(
        f"spool: {_one(values, 'spool_rows'):,.0f} rows, "
        f"{_one(values, 'spool_bytes') / 1e6:,.1f} MB on disk"
    )
