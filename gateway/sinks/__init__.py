"""Sinks: where spooled samples are delivered. Each reads the spool from its own cursor."""

from __future__ import annotations

from ..config import SiteConfig
from .base import Sink


def build_sinks(site: SiteConfig) -> list[Sink]:
    """The sinks a site config asks for, in a stable order (their names key spool cursors)."""
    sinks: list[Sink] = []
    if site.influxdb is not None:
        if site.influxdb.api == "v1":
            from .influx_v1 import InfluxV1Sink

            sinks.append(InfluxV1Sink(site.influxdb, site.site))
        else:
            from .influx_v2 import InfluxV2Sink

            sinks.append(InfluxV2Sink(site.influxdb, site.site))
    if site.history_enabled:
        from .local_history import LocalHistorySink

        sinks.append(LocalHistorySink(site.local_history, site.site))
    return sinks


__all__ = ["Sink", "build_sinks"]
