"""Finding plugins: one mechanism for adapters and sinks, built-ins and third parties alike.

Each plugin is an entry point whose value is a small descriptor object (an
:class:`~.adapters.base.AdapterPlugin` or a :class:`~.sinks.base.SinkPlugin`). Loading the
descriptor imports no protocol library; the descriptor's own ``load`` does, when the plugin
is used. A missing library is reported with the extra that installs it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from typing import TypeVar

from .errors import PluginError

T = TypeVar("T")


def discover(group: str, kind: type[T]) -> dict[str, T]:
    """Every descriptor of ``group`` by entry-point name, checked to be a ``kind``."""
    found: dict[str, T] = {}
    for ep in sorted(entry_points(group=group), key=lambda e: e.name):
        if ep.name in found:
            continue  # the same name twice (two installs of one package): the first wins
        found[ep.name] = _load(ep, group, kind)
    return found


def _load(ep: EntryPoint, group: str, kind: type[T]) -> T:
    try:
        obj = ep.load()
    except ImportError as err:
        raise PluginError(
            f"{group} entry point {ep.name!r} ({ep.value}) cannot be imported: {err}"
        ) from err
    if not isinstance(obj, kind):
        raise PluginError(
            f"{group} entry point {ep.name!r} ({ep.value}) is a {type(obj).__name__}, "
            f"expected a {kind.__name__}"
        )
    return obj


def check_requirements(what: str, requirements: Iterable[str], hint: str) -> None:
    """Raise PluginError naming the libraries ``what`` needs and this environment lacks."""
    missing = [r for r in requirements if importlib.util.find_spec(r) is None]
    if missing:
        how = f"; install them with: {hint}" if hint else ""
        raise PluginError(f"{what} needs {', '.join(missing)}, which is not installed{how}")
