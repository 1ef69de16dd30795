"""The Sparkplug adapter's config: one mapping or several, never both; ids that fit a topic."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from microfactory.gateway.adapters.sparkplug.config import SparkplugAdapterConfig
from microfactory.gateway.config import parse_site_config

METRICS = [{"name": "Power/Active", "signal": "power_active", "unit": "kW"}]
BASE: dict[str, Any] = {"type": "sparkplug", "name": "spb", "group_id": "Plant"}


def test_single_mapping_and_several_give_the_same_mappings() -> None:
    single = SparkplugAdapterConfig.model_validate(
        {**BASE, "edge_node": "N", "device": "meter", "machine": "press-1", "metrics": METRICS}
    )
    several = SparkplugAdapterConfig.model_validate(
        {
            **BASE,
            "devices": [
                {"edge_node": "N", "device": "meter", "machine": "press-1", "metrics": METRICS},
                {"edge_node": "N", "machine": "laser-1", "metrics": METRICS},
                {"edge_node": "M", "device": "meter", "machine": "saw-1", "metrics": METRICS},
            ],
        }
    )
    assert single.mappings() == several.mappings()[:1]
    assert several.edge_nodes() == ["N", "M"]
    assert several.machines_referenced() == {"press-1", "laser-1", "saw-1"}
    assert ("press-1", "power_active") in several.signals_referenced()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"edge_node": "N", "machine": "m"}, "missing: metrics"),
        ({}, "a single mapping needs"),
        (
            {
                "edge_node": "N",
                "devices": [{"edge_node": "N", "machine": "m", "metrics": METRICS}],
            },
            "not both",
        ),
        (
            {
                "devices": [
                    {"edge_node": "N", "machine": "m", "metrics": METRICS},
                    {"edge_node": "N", "machine": "k", "metrics": METRICS},
                ]
            },
            "mapped twice",
        ),
    ],
    ids=["incomplete", "nothing", "both", "twice"],
)
def test_mappings_are_refused_in_words(extra: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SparkplugAdapterConfig.model_validate({**BASE, **extra})


def test_site_broker_is_used_when_the_adapter_has_none() -> None:
    site = parse_site_config(
        {
            "site": "s",
            "machines": [{"id": "press-1"}],
            "mqtt": {"url": "mqtt://broker:1884", "username": "gw", "password": "pw"},
            "adapters": [
                {**BASE, "edge_node": "N", "machine": "press-1", "metrics": METRICS},
            ],
        },
        "test",
    )
    (adapter,) = site.adapters
    assert isinstance(adapter, SparkplugAdapterConfig)
    settings = adapter.connection()
    assert (settings.url, settings.username, settings.password) == (
        "mqtt://broker:1884",
        "gw",
        "pw",
    )
    assert settings.client_id.endswith("-spb")
