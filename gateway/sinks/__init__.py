"""Sinks: where spooled samples are delivered. Each reads the spool from its own cursor.

Built-in and third-party sinks register the same way: an entry point in the
``microfactory.sinks`` group naming a :class:`SinkPlugin`.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING, Any

from ..plugins import check_requirements, discover
from .base import ContextSource, Sink, SinkContext, SinkFactory, SinkPlugin

if TYPE_CHECKING:
    from ..config import SiteConfig

ENTRY_POINT_GROUP = "microfactory.sinks"

__all__ = [
    "ENTRY_POINT_GROUP",
    "ContextSource",
    "Sink",
    "SinkContext",
    "SinkFactory",
    "SinkPlugin",
    "build_sinks",
    "sink_plugins",
]


@functools.cache
def sink_plugins() -> dict[str, SinkPlugin[Any]]:
    """Every installed sink plugin by entry-point name (cached; ``cache_clear`` after installs)."""
    return discover(ENTRY_POINT_GROUP, SinkPlugin)


def build_sinks(site: SiteConfig) -> list[Sink]:
    """The sinks the site config asks for, in entry-point name order (names key spool cursors)."""
    state_dir = site.spool.path.parent
    sinks: list[Sink] = []
    for name, plugin in sink_plugins().items():
        settings = plugin.select(site)
        if settings is None:
            continue
        check_requirements(f"sink {name!r}", plugin.requirements, plugin.install_hint)
        context = SinkContext(
            site=site.site,
            state_dir=state_dir,
            logger=logging.getLogger(f"microfactory.gateway.sinks.{name}"),
        )
        sinks.append(plugin.load()(settings, context))
    return sinks
