"""OPC UA adapter: subscriptions (and optional polling) on a machine's OPC UA server."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...sdk import AdapterFactory, AdapterPlugin
from .config import OpcUaAdapterConfig

if TYPE_CHECKING:
    from .adapter import OpcUaAdapter


def _load() -> AdapterFactory[OpcUaAdapterConfig]:
    from .adapter import OpcUaAdapter

    return OpcUaAdapter


plugin = AdapterPlugin(
    config_model=OpcUaAdapterConfig,
    load=_load,
    requirements=("asyncua",),
    install_hint="pip install 'microfactory[gateway]'",
)

__all__ = ["OpcUaAdapter", "OpcUaAdapterConfig", "plugin"]
