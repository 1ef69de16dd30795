"""MQTT adapter: JSON telemetry from machines that publish on a broker."""

from typing import Any

from .config import MqttAdapterConfig


def __getattr__(name: str) -> Any:
    # the adapter (and its protocol library) is imported when used, not when configs load
    if name == "MqttAdapter":
        from .adapter import MqttAdapter

        return MqttAdapter
    raise AttributeError(name)


__all__ = ["MqttAdapter", "MqttAdapterConfig"]
