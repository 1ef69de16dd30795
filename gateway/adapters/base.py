"""The contract between the gateway core and an adapter: config base, context, plugin.

An adapter package (built-in or an integrator's) exposes one :class:`AdapterPlugin` through
the ``microfactory.adapters`` entry-point group. The plugin names the config model, which is
all ``config check`` needs, and a ``load`` function that imports the adapter itself (and its
protocol library) only when a gateway runs it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from typing import Self

    from ..config import SiteConfig
    from ..sample import RawSample

API_VERSION = 1
"""Version of the adapter API (this module and :mod:`microfactory.gateway.sdk`).

Raised only by a change that breaks existing adapters; a plugin built for another version is
refused with a message naming both.
"""

ConnectionState = Literal["connecting", "connected", "disconnected", "stale", "stopped"]
DeviceState = Literal["live", "stale", "offline"]


class AdapterConfigBase(BaseModel):
    """What every adapter config shares; each adapter adds its own fields and a ``type``."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str

    def machines_referenced(self) -> set[str]:
        """Machine ids this adapter produces samples for (checked against ``machines``)."""
        return set()

    def signals_referenced(self) -> set[tuple[str, str]]:
        """The (machine, signal) pairs this adapter is configured to produce, where it knows.

        Lets the site config refuse two adapters feeding one machine's energy counter (its
        own and a meter's), which would interleave two counters into nonsense. An adapter
        whose signals come from the data (an MQTT ``{signal}`` level) leaves those out.
        """
        return set()

    def with_site_defaults(self, site: SiteConfig) -> Self:
        """This config with what it takes from site-wide sections filled in (e.g. a broker).

        Called once when the site config is validated; the default takes nothing.
        """
        return self

    def with_base_dir(self, base: Path) -> Self:
        """This config with relative file paths taken from ``base``, the config file's folder.

        Called once when a site config file is loaded; the default has no paths.
        """
        return self


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

    def device(self, adapter: str, device: str, state: DeviceState) -> None:
        """One device behind an adapter is live, stale or offline (see ``DeviceWatch``)."""


@dataclass(frozen=True, slots=True)
class AdapterContext:
    """What the gateway gives an adapter besides its own config: narrow on purpose.

    An adapter sees its site's id and declared machines, the emitter, a clock, a logger
    named after it and a directory of its own for state; never the whole site config.
    """

    site: str
    machines: frozenset[str]
    emitter: Emitter
    logger: logging.Logger
    state_dir: Path
    clock: Callable[[], int] = field(default=time.time_ns)
    """Wall-clock time in UTC nanoseconds (tests may pass a fake one)."""


class Adapter(Protocol):
    """One configured connection to machines; many may run at once (no module state)."""

    async def start(self) -> None:
        """Begin connecting in the background and return at once; never raise on I/O."""

    async def stop(self, timeout_s: float) -> None:
        """Disconnect, finishing within ``timeout_s``."""


C = TypeVar("C", bound=AdapterConfigBase)
C_contra = TypeVar("C_contra", bound=AdapterConfigBase, contravariant=True)


class AdapterFactory(Protocol[C_contra]):
    """Builds an adapter from its validated config and the context (an adapter class is one)."""

    def __call__(self, config: C_contra, context: AdapterContext, /) -> Adapter: ...


@dataclass(frozen=True, slots=True)
class AdapterPlugin(Generic[C]):
    """The entry point of an adapter: its config model now, its code when it is used.

    ``requirements`` are the import names of the libraries the adapter needs; a gateway that
    lacks one says which, and which extra installs it, instead of a bare ImportError.
    """

    config_model: type[C]
    load: Callable[[], AdapterFactory[C]]
    requirements: tuple[str, ...] = ()
    install_hint: str = ""
    api_version: int = API_VERSION
