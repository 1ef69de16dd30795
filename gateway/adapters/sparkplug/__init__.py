"""Sparkplug B adapter: metrics of Sparkplug edge nodes and devices, read from a broker.

The payload schema is Eclipse Tahu's ``sparkplug_b.proto`` (EPL-2.0, kept next to this file
with its header), compiled into ``sparkplug_b_pb2.py``/``.pyi``. They are compiled with
Debian's ``protoc`` 3.21 (``apt-get install protobuf-compiler``)::

    cd gateway/adapters/sparkplug && protoc -I. --python_out=. --pyi_out=. sparkplug_b.proto

because code from a newer ``protoc`` refuses to load on an older protobuf runtime (grpcio-tools
1.85's demands protobuf >= 7.35), while 3.21's loads on every runtime from 4.21 on, so the
``protobuf>=5.29`` of the ``gateway`` extra holds. See docs/sparkplug.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...sdk import AdapterFactory, AdapterPlugin
from .config import SparkplugAdapterConfig

if TYPE_CHECKING:
    from .adapter import SparkplugAdapter


def _load() -> AdapterFactory[SparkplugAdapterConfig]:
    from .adapter import SparkplugAdapter

    return SparkplugAdapter


plugin = AdapterPlugin(
    config_model=SparkplugAdapterConfig,
    load=_load,
    requirements=("google.protobuf", "paho.mqtt"),
    install_hint="pip install 'microfactory[gateway]'",
)

__all__ = ["SparkplugAdapter", "SparkplugAdapterConfig", "plugin"]
