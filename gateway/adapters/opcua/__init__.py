"""OPC UA adapter: subscriptions (and optional polling) on a machine's OPC UA server."""

from .adapter import OpcUaAdapter
from .config import OpcUaAdapterConfig

__all__ = ["OpcUaAdapter", "OpcUaAdapterConfig"]
