"""MQTT adapter: JSON telemetry from machines that publish on a broker."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...sdk import AdapterFactory, AdapterPlugin
from .config import MqttAdapterConfig

if TYPE_CHECKING:
    from .adapter import MqttAdapter


def _load() -> AdapterFactory[MqttAdapterConfig]:
    from .adapter import MqttAdapter

    return MqttAdapter


plugin = AdapterPlugin(
    config_model=MqttAdapterConfig,
    load=_load,
    requirements=("paho.mqtt",),
    install_hint="pip install 'microfactory[gateway]'",
)

__all__ = ["MqttAdapter", "MqttAdapterConfig", "plugin"]
