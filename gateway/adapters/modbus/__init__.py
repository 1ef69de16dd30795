"""Modbus adapter: polls energy meters and field devices over Modbus TCP or RTU (RS-485)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...sdk import AdapterFactory, AdapterPlugin
from .config import DeviceSpec, ModbusAdapterConfig
from .maps import MeterMap, bundled_maps, load_map

if TYPE_CHECKING:
    from .adapter import ModbusAdapter


def _load() -> AdapterFactory[ModbusAdapterConfig]:
    from .adapter import ModbusAdapter

    return ModbusAdapter


plugin = AdapterPlugin(
    config_model=ModbusAdapterConfig,
    load=_load,
    requirements=("pymodbus",),
    install_hint="pip install 'microfactory[gateway]'",
)

__all__ = [
    "DeviceSpec",
    "MeterMap",
    "ModbusAdapter",
    "ModbusAdapterConfig",
    "bundled_maps",
    "load_map",
    "plugin",
]
