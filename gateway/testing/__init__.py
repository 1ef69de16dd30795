"""Test helpers for adapter packages: the conformance kit and a recording emitter.

Public API (covered by the adapter API version, :data:`microfactory.gateway.sdk.API_VERSION`):

- :class:`AdapterConformance`: subclass it in a test module to run every check the gateway
  expects of an adapter against your adapter and its real counterpart;
- :class:`BadConfig`, :class:`Counterpart`: what the subclass supplies;
- :class:`RecordingEmitter`: an emitter that records what an adapter emits and checks the
  emitter contract, for your own tests too;
- :func:`wait_until`, :func:`field_paths`: small helpers the checks use.

Needs pytest (it is a test helper); the gateway itself never imports it.
"""

from __future__ import annotations

from .conformance import AdapterConformance, BadConfig, Counterpart, field_paths, wait_until
from .emitter import DeadLetter, Gap, RecordingEmitter, Refused

__all__ = [
    "AdapterConformance",
    "BadConfig",
    "Counterpart",
    "DeadLetter",
    "Gap",
    "RecordingEmitter",
    "Refused",
    "field_paths",
    "wait_until",
]
