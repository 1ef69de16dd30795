"""Which extra a command needs, read from the installed package's own metadata.

Each program's libraries are an extra (``microfactory[gateway]``, ``[mes]``, ``[sim]``,
``[all]``), so a command can find its program's libraries missing. pyproject.toml is the one
list of what each extra holds: this module reads it back from the distribution's
``Requires-Dist`` lines rather than keeping a second list, and the command then says in one
line what to install instead of failing with a traceback deep in an import.
"""

from __future__ import annotations

import re
from importlib import metadata

import typer

DISTRIBUTION = "microfactory"

# `name[extra,...] (version) ; marker` — only the name, the extras and `extra == "x"` matter
_REQUIREMENT = re.compile(
    r"^\s*(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[(?P<extras>[^\]]*)\])?[^;]*(?:;(?P<marker>.*))?$"
)
_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def missing_for(extra: str) -> list[str]:
    """The distributions of ``microfactory[extra]`` (its nested extras too) not installed.

    Empty when everything is there, and when the package's metadata cannot be read (a source
    tree on ``sys.path``): then the command runs and an import error speaks for itself.
    """
    try:
        requirements = metadata.requires(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        return []
    by_extra: dict[str, list[tuple[str, list[str]]]] = {}
    for line in requirements:
        match = _REQUIREMENT.match(line)
        if match is None:
            continue
        marker = _EXTRA_MARKER.search(match["marker"] or "")
        if marker is None:
            continue  # a base dependency: installed with the package itself
        nested = [e.strip() for e in (match["extras"] or "").split(",") if e.strip()]
        by_extra.setdefault(_normalise(marker[1]), []).append((match["name"], nested))

    missing: list[str] = []
    seen: set[str] = set()
    todo = [_normalise(extra)]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        for name, nested in by_extra.get(current, []):
            if _normalise(name) == DISTRIBUTION:
                todo.extend(_normalise(e) for e in nested)
                continue
            try:
                metadata.version(name)
            except metadata.PackageNotFoundError:
                if name not in missing:
                    missing.append(name)
    return missing


def require(extra: str, what: str, command: str) -> None:
    """Exit 2 with one line naming the extra when ``command`` cannot run in this install."""
    missing = missing_for(extra)
    if missing:
        typer.echo(
            f"microfactory {command}: needs {what}: pip install 'microfactory[{extra}]' "
            f"(missing: {', '.join(missing)})",
            err=True,
        )
        raise typer.Exit(2)
