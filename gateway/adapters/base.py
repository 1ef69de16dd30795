"""The small contract between the gateway core and an adapter."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

if TYPE_CHECKING:
    from ..config import AdapterConfigBase, SiteConfig
    from ..sample import RawSample

ConnectionState = Literal["connecting", "connected", "disconnected", "stopped"]


class Emitter(Protocol):
    """Where an adapter hands its data. Every method is thread-safe and never blocks.

    ``ack`` is called once the samples are durable in the spool (or were dead-lettered):
    an adapter that can delay its protocol acknowledgement (MQTT QoS 1 PUBACK) does so
    until then, which is what makes "acknowledged means on disk" true.
    """

    def submit(self, samples: list[RawSample], ack: Callable[[], None] | None = None) -> None: ...

    def dead_letter(
        self,
        source: str,
        origin: str,
        reason: str,
        payload: bytes,
        ack: Callable[[], None] | None = None,
    ) -> None: ...

    def connection(self, adapter: str, state: ConnectionState) -> None: ...

    def gap(self, machine: str, start_ns: int, end_ns: int, reason: str) -> None: ...


class Adapter(Protocol):
    """One configured connection to machines; many may run at once (no module state)."""

    config_model: ClassVar[type[AdapterConfigBase]]

    async def start(self) -> None:
        """Begin connecting in the background and return at once; never raise on I/O."""

    async def stop(self, timeout_s: float) -> None:
        """Disconnect, finishing within ``timeout_s``."""


AdapterFactory = Callable[..., Adapter]  # also has .config_model
"""Called as ``cls(config, site=SiteConfig, emitter=Emitter)``."""


def make_adapter(
    cls: AdapterFactory, config: AdapterConfigBase, site: SiteConfig, emitter: Emitter
) -> Adapter:
    return cls(config, site=site, emitter=emitter)
