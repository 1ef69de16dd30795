"""Adapters turn a machine's native data into canonical samples.

Built-in and third-party adapters register the same way: an entry point in the
``microfactory.adapters`` group naming a class that meets :class:`Adapter`. The gateway core
never names a protocol.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any, cast

from .base import Adapter, AdapterFactory, Emitter

ENTRY_POINT_GROUP = "microfactory.adapters"
# Built-ins name their config model apart from the class: validating a site config must not
# import protocol libraries (asyncua alone is ~25 MB of RSS) that the site does not use.
_BUILTIN = {
    "opcua": (
        "microfactory.gateway.adapters.opcua.config:OpcUaAdapterConfig",
        "microfactory.gateway.adapters.opcua.adapter:OpcUaAdapter",
    ),
    "mqtt": (
        "microfactory.gateway.adapters.mqtt.config:MqttAdapterConfig",
        "microfactory.gateway.adapters.mqtt.adapter:MqttAdapter",
    ),
}

__all__ = ["Adapter", "AdapterFactory", "Emitter", "adapter_class", "registry"]


def _load(target: str) -> Any:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _third_party() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name not in _BUILTIN}


@functools.cache
def adapter_class(kind: str) -> AdapterFactory:
    """The adapter class of one ``type``, imported on first use."""
    if kind in _BUILTIN:
        cls: AdapterFactory = _load(_BUILTIN[kind][1])
        return cls
    return cast(AdapterFactory, _third_party()[kind].load())


def registry() -> dict[str, type]:
    """Config models by adapter ``type``, for the site config's discriminated union."""
    models: dict[str, type] = {kind: _load(targets[0]) for kind, targets in _BUILTIN.items()}
    for kind in _third_party():
        models[kind] = getattr(adapter_class(kind), "config_model")  # noqa: B009
    return models
