"""The contract between the delivery loop and a sink, and how a sink plugin declares itself."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar, runtime_checkable

from ..sample import Sample

if TYPE_CHECKING:
    from ..config import SiteConfig


class Sink(Protocol):
    """Where spooled samples are delivered; it reads the spool from its own cursor (``name``)."""

    name: str
    batch_size: int

    async def open(self) -> None:
        """Prepare the client; never raise on I/O (the delivery loop retries writes)."""

    async def ensure_database(self) -> None:
        """Create what must exist before the first write (an InfluxDB 1.x database), if any."""

    async def close(self) -> None: ...

    async def write(self, samples: list[Sample]) -> None:
        """Deliver all or raise SinkError (retryable or not, with Retry-After if given)."""

    def describe(self, sample: Sample) -> str:
        """How the sample looks on this sink's wire (for the quarantine record)."""
        ...


@runtime_checkable
class ContextSource(Protocol):
    """A sink that also learns each machine's context (the MES link): the pipeline tags with it."""

    context: dict[str, dict[str, str]]

    @property
    def refused(self) -> dict[str, int]:
        """Contexts refused on arrival (forged, oversized, badly signed), by reason."""
        ...


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What the gateway gives a sink besides its own section of the site config."""

    site: str
    state_dir: Path
    logger: logging.Logger


S = TypeVar("S")
S_contra = TypeVar("S_contra", contravariant=True)


class SinkFactory(Protocol[S_contra]):
    """Builds a sink from its section of the site config and the context."""

    def __call__(self, settings: S_contra, context: SinkContext, /) -> Sink: ...


@dataclass(frozen=True, slots=True)
class SinkPlugin(Generic[S]):
    """The entry point of a sink: which part of the site config asks for it, and its code.

    ``select`` returns the settings the sink is built from, or None when the site config does
    not ask for this sink; ``load`` imports the sink (and its client library) when it is used.
    """

    select: Callable[[SiteConfig], S | None]
    load: Callable[[], SinkFactory[S]]
    requirements: tuple[str, ...] = ()
    install_hint: str = ""
