"""Test kinds are markers, and a rule keeps them true: a test that starts a server says so.

``pytest -m "not integration"`` is the quick run of the pure tests; it is only quick (and only
pure) if every test that starts a real server carries the ``integration`` marker. Fixtures that
start one are declared with :func:`starts_server`; :func:`check_kinds` refuses the collection
when a test uses such a fixture (directly or through another fixture) without the marker.
``e2e`` and ``faults`` tests start servers by definition, so those kinds imply ``integration``
(:func:`imply_integration`): one marker to write, none to forget.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pytest

# The kinds that always run against real servers: ``integration`` is added to them.
KINDS_WITH_SERVERS = ("e2e", "faults")
_ATTR = "__microfactory_starts_server__"

F = TypeVar("F", bound=Callable[..., Any])


def starts_server(what: str) -> Callable[[F], F]:
    """Declare that the fixture below starts ``what`` (a real server): its users are integration.

    Put it under ``@pytest.fixture``, so that it marks the function pytest runs.
    """

    def declare(fixture: F) -> F:
        setattr(fixture, _ATTR, what)
        return fixture

    return declare


def imply_integration(items: Iterable[pytest.Item]) -> None:
    """Give ``integration`` to every ``e2e`` / ``faults`` test that lacks it."""
    for item in items:
        if item.get_closest_marker("integration") is None and any(
            item.get_closest_marker(kind) is not None for kind in KINDS_WITH_SERVERS
        ):
            item.add_marker(pytest.mark.integration)


def servers_used(item: pytest.Item) -> list[tuple[str, str]]:
    """(fixture name, what it starts) for each server-starting fixture in ``item``'s closure."""
    # pytest has no public accessor for a test's fixture definitions; pytest-asyncio and
    # pytest-django read the same attribute.
    info = getattr(item, "_fixtureinfo", None)
    if info is None:  # not a Python test function (e.g. a doctest)
        return []
    found: list[tuple[str, str]] = []
    for name in info.names_closure:
        defs: Sequence[Any] = info.name2fixturedefs.get(name, ())
        for fixturedef in defs:
            what = getattr(fixturedef.func, _ATTR, None)
            if what is not None:
                found.append((name, what))
                break
    return found


def unmarked_server_tests(items: Iterable[pytest.Item]) -> list[str]:
    """One line per test that uses a server-starting fixture without the integration marker."""
    problems = []
    for item in items:
        if item.get_closest_marker("integration") is not None:
            continue
        for name, what in servers_used(item):
            problems.append(
                f"{item.nodeid}: uses fixture {name!r}, which starts {what}, but is not marked "
                "integration (mark it pytest.mark.integration, or e2e / faults, which imply it)"
            )
    return problems


def check_kinds(items: Sequence[pytest.Item]) -> None:
    """Apply the implied kinds, then refuse the collection if a server test is unmarked."""
    imply_integration(items)
    problems = unmarked_server_tests(items)
    if problems:
        raise pytest.UsageError(
            "tests that start a server must be marked integration:\n  " + "\n  ".join(problems)
        )
