"""InfluxDB sinks: 1.x through ``/write`` (httpx), 2.x/3.x through influxdb-client (v2 API)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import SinkFactory, SinkPlugin

if TYPE_CHECKING:
    from ...config import InfluxSettings, SiteConfig

HINT = "pip install 'microfactory[gateway]'"


def _load_v1() -> SinkFactory[InfluxSettings]:
    from .v1 import InfluxV1Sink

    return InfluxV1Sink


def _load_v2() -> SinkFactory[InfluxSettings]:
    from .v2 import InfluxV2Sink

    return InfluxV2Sink


def _select_v1(site: SiteConfig) -> InfluxSettings | None:
    return site.influxdb if site.influxdb is not None and site.influxdb.api == "v1" else None


def _select_v2(site: SiteConfig) -> InfluxSettings | None:
    return site.influxdb if site.influxdb is not None and site.influxdb.api == "v2" else None


influxdb_v1: SinkPlugin[InfluxSettings] = SinkPlugin(
    select=_select_v1, load=_load_v1, requirements=("httpx",), install_hint=HINT
)
influxdb_v2: SinkPlugin[InfluxSettings] = SinkPlugin(
    select=_select_v2, load=_load_v2, requirements=("influxdb_client",), install_hint=HINT
)
