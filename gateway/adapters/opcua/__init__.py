"""OPC UA adapter: subscriptions (and optional polling) on a machine's OPC UA server."""

from typing import Any

from .config import OpcUaAdapterConfig


def __getattr__(name: str) -> Any:
    # the adapter (and its protocol library) is imported when used, not when configs load
    if name == "OpcUaAdapter":
        from .adapter import OpcUaAdapter

        return OpcUaAdapter
    raise AttributeError(name)


__all__ = ["OpcUaAdapter", "OpcUaAdapterConfig"]
