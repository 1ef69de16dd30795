"""The layers hold, and the check that holds them bites.

``lint-imports`` checks the contracts of pyproject.toml's ``[tool.importlinter]`` on the tree;
then, on a scratch copy of the package with one forbidden import added, it must fail and name
the contract that broke — a check that never fails proves nothing. No server, a few seconds.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
TOP_LEVEL_NAMES = {"gateway", "services", "simulators"}


def _contract_names() -> dict[str, str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    contracts = config["tool"]["importlinter"]["contracts"]
    return {c["id"]: c["name"] for c in contracts}


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run lint-imports in ``cwd`` on the package found there first (no cache, no logo)."""
    env = {**os.environ, "PYTHONPATH": str(cwd), "COLUMNS": "300", "NO_COLOR": "1"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_tree_keeps_every_contract() -> None:
    result = _lint_imports(ROOT)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"lint-imports found broken layers:\n{output}"
    for name in _contract_names().values():
        assert f"{name} KEPT" in output, f"contract {name!r} was not checked:\n{output}"


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    """A copy of the package with real folders where the tree has symlinks, and the config."""
    shutil.copytree(
        ROOT / "microfactory",
        tmp_path / "microfactory",
        symlinks=False,
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "line", "contract", "violation"),
    [
        (
            "mes/timeutil.py",
            "import microfactory.gateway.sample",
            "layers",
            "microfactory.mes.timeutil -> microfactory.gateway.sample",
        ),
        (
            "gateway/pipeline.py",
            "import asyncua",
            "asyncua",
            "microfactory.gateway.pipeline -> asyncua",
        ),
        (
            "contract.py",
            "import yaml",
            "contract-pydantic-only",
            "microfactory.contract -> yaml",
        ),
        (
            "sim/model.py",
            "import simulators.clock",
            "no-top-level-names",
            "microfactory.sim.model -> simulators",
        ),
    ],
)
def test_a_forbidden_import_breaks_its_contract(
    scratch: Path, module: str, line: str, contract: str, violation: str
) -> None:
    path = scratch / "microfactory" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}  # noqa\n", encoding="utf-8")
    result = _lint_imports(scratch)
    output = result.stdout + result.stderr
    name = _contract_names()[contract]
    assert result.returncode == 1, f"lint-imports let `{line}` in {module} pass:\n{output}"
    assert f"{name} BROKEN" in output, f"contract {name!r} not reported broken:\n{output}"
    assert violation in output, f"the broken import {violation!r} is not named:\n{output}"


def _imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_code_outside_the_package_imports_microfactory_only() -> None:
    """Tests, docs and benches import ``microfactory.*``, never the folder names."""
    offenders = []
    for folder in ("tests", "docs", "bench", "deploy", "dashboards"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            wrong = _imported_roots(path) & TOP_LEVEL_NAMES
            if wrong:
                offenders.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(wrong))}")
    assert not offenders, "import microfactory.gateway/.mes/.sim instead:\n" + "\n".join(offenders)
