"""What a sink must offer to the delivery loop."""

from __future__ import annotations

from typing import Protocol

from ..sample import Sample


class Sink(Protocol):
    name: str
    batch_size: int

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def write(self, samples: list[Sample]) -> None:
        """Deliver all or raise SinkError (retryable or not, with Retry-After if given)."""

    def describe(self, sample: Sample) -> str:
        """How the sample looks on this sink's wire (for the quarantine record)."""
        ...
