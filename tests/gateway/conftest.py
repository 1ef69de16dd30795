"""Fixtures of the fault tests: real servers, and a gateway that can be built from a dict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.gateway import Publisher, unique_prefix
from tests.helpers.markers import starts_server
from tests.helpers.servers import Mosquitto


@pytest.fixture
def prefix() -> str:
    """A topic prefix of its own: parallel tests never collide on a broker."""
    return unique_prefix()


@pytest.fixture
@starts_server("Mosquitto")
def big_queue_mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """Mosquitto keeping up to 1M QoS 1 messages for an absent persistent session."""
    with Mosquitto(
        tmp_path / "mosquitto",
        extra="max_queued_messages 1000000\nmax_inflight_messages 0",
    ) as server:
        yield server


@pytest.fixture
def publisher_factory() -> Iterator[type[Publisher]]:
    made: list[Publisher] = []

    class _Tracked(Publisher):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]
            made.append(self)

    yield _Tracked
    for p in made:
        p.close()
