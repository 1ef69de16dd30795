"""Contexts the MES link refuses on arrival are counted in /metrics by reason (read at scrape)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from microfactory.gateway.health import Health
from microfactory.gateway.metrics import PREFIX, GatewayCollector


def _refused(health: Health, tmp_path: Path) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(GatewayCollector(health, tmp_path / "none.sqlite", [], lambda _: 0))
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name == f"{PREFIX}_context_refused_total":
                out[sample.labels["reason"]] = sample.value
    return out


def test_refused_contexts_are_read_from_the_link_at_each_scrape(tmp_path: Path) -> None:
    health = Health()
    assert _refused(health, tmp_path) == {}
    counts = {"machine": 2, "empty": 1}
    health.context_refused = lambda: dict(counts)
    assert _refused(health, tmp_path) == {"machine": 2.0, "empty": 1.0}
    counts["signature_bad"] = 4
    assert _refused(health, tmp_path)["signature_bad"] == 4.0
    assert health.snapshot()["context_refused"] == counts
