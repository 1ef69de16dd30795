"""MQTT adapter: JSON telemetry from machines that publish on a broker."""

from .adapter import MqttAdapter
from .config import MqttAdapterConfig

__all__ = ["MqttAdapter", "MqttAdapterConfig"]
