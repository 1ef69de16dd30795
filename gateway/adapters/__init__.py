"""Adapters turn a machine's native data into canonical samples.

Built-in and third-party adapters register the same way: an entry point in the
``microfactory.adapters`` group naming an :class:`AdapterPlugin`. The gateway core never
names a protocol, and validating a site config imports no protocol library.
"""

from __future__ import annotations

import functools

from ..errors import PluginError
from ..plugins import check_requirements, discover
from .base import (
    API_VERSION,
    Adapter,
    AdapterConfigBase,
    AdapterContext,
    AdapterFactory,
    AdapterPlugin,
    Emitter,
)

ENTRY_POINT_GROUP = "microfactory.adapters"

__all__ = [
    "ENTRY_POINT_GROUP",
    "Adapter",
    "AdapterConfigBase",
    "AdapterContext",
    "AdapterFactory",
    "AdapterPlugin",
    "Emitter",
    "adapter_plugins",
    "config_models",
    "load_adapter",
]


@functools.cache
def adapter_plugins() -> dict[str, AdapterPlugin[AdapterConfigBase]]:
    """Every installed adapter plugin by ``type`` (cached; ``cache_clear`` after installs)."""
    plugins: dict[str, AdapterPlugin[AdapterConfigBase]] = discover(
        ENTRY_POINT_GROUP,
        AdapterPlugin,
    )
    for kind, plugin in plugins.items():
        if plugin.api_version != API_VERSION:
            raise PluginError(
                f"adapter {kind!r} was written for adapter API {plugin.api_version}, "
                f"this gateway speaks {API_VERSION}"
            )
        declared = plugin.config_model.model_fields["type"].default
        if declared != kind:
            raise PluginError(
                f"adapter entry point {kind!r}: its config model "
                f"{plugin.config_model.__name__} declares type {declared!r}"
            )
    return plugins


def config_models() -> dict[str, type[AdapterConfigBase]]:
    """Config models by adapter ``type``, for the site config's discriminated union."""
    return {kind: plugin.config_model for kind, plugin in adapter_plugins().items()}


def load_adapter(kind: str) -> AdapterFactory[AdapterConfigBase]:
    """The factory of one adapter ``type``: its code (and protocol library) imported now."""
    plugin = adapter_plugins()[kind]
    check_requirements(f"adapter type {kind!r}", plugin.requirements, plugin.install_hint)
    return plugin.load()
