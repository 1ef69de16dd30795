"""The kind rule, run by a real pytest on a toy suite: an unmarked server test stops collection."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

INI = """\
[pytest]
addopts = --strict-markers -p no:cacheprovider
markers =
    integration: starts a server
    e2e: everything
    faults: broken servers
"""

CONFTEST = """\
import pytest

from tests.helpers.markers import check_kinds, starts_server


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    check_kinds(items)


@pytest.fixture
@starts_server("a toy server")
def toy():
    yield "up"


@pytest.fixture
def through_toy(toy):
    return toy
"""


def _run(tmp_path: Path, tests: str, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text(INI)
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_toy.py").write_text(tests)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *args],
        cwd=tmp_path,
        # no entry-point plugins (schemathesis, hypothesis...): the toy suite needs none
        env={**os.environ, "PYTHONPATH": str(REPO), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_test_reaching_a_server_fixture_unmarked_stops_the_collection(tmp_path: Path) -> None:
    tests = "def test_pure():\n    pass\n\n\ndef test_sneaky(through_toy):\n    pass\n"
    done = _run(tmp_path, tests, "-m", "not integration")
    assert done.returncode == 4, done.stdout + done.stderr  # pytest's usage error
    assert "test_toy.py::test_sneaky: uses fixture 'toy', which starts a toy server" in (
        done.stderr
    ), done.stderr
    assert "test_pure" not in done.stderr  # only the offender is named


def test_e2e_and_faults_imply_integration(tmp_path: Path) -> None:
    tests = (
        "import pytest\n\n\n"
        "def test_pure():\n    pass\n\n\n"
        "@pytest.mark.e2e\ndef test_whole(through_toy):\n    pass\n\n\n"
        "@pytest.mark.faults\ndef test_broken(toy):\n    pass\n"
    )
    quick = _run(tmp_path, tests, "-m", "not integration")
    assert quick.returncode == 0, quick.stdout + quick.stderr
    assert "1 passed, 2 deselected" in quick.stdout, quick.stdout
    slow = _run(tmp_path, tests, "-m", "integration")
    assert "2 passed, 1 deselected" in slow.stdout, slow.stdout
