"""Adapters turn a machine's native data into canonical samples.

Built-in and third-party adapters register the same way: an entry point in the
``microfactory.adapters`` group naming a class that meets :class:`Adapter`. The gateway core
never names a protocol.
"""

from __future__ import annotations

import functools
from importlib.metadata import entry_points

from .base import Adapter, AdapterFactory, Emitter

ENTRY_POINT_GROUP = "microfactory.adapters"
_BUILTIN = {
    "opcua": "gateway.adapters.opcua:OpcUaAdapter",
    "mqtt": "gateway.adapters.mqtt:MqttAdapter",
}

__all__ = ["Adapter", "AdapterFactory", "Emitter", "adapter_classes", "registry"]


def _load(target: str) -> AdapterFactory:
    import importlib

    module, _, attr = target.partition(":")
    cls: AdapterFactory = getattr(importlib.import_module(module), attr)
    return cls


@functools.cache
def adapter_classes() -> dict[str, AdapterFactory]:
    """Adapter classes by ``type``: built-ins, then whatever installed packages declare."""
    found = {name: _load(target) for name, target in _BUILTIN.items()}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name not in found:
            found[ep.name] = ep.load()
    return found


def registry() -> dict[str, type]:
    """Config models by adapter ``type``, for the site config's discriminated union."""
    return {name: getattr(cls, "config_model") for name, cls in adapter_classes().items()}  # noqa: B009
