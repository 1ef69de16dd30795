"""The deploy scripts: shellcheck-clean, and the installer's options as the docs name them."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = [*sorted(ROOT.glob("deploy/*.sh")), ROOT / ".ci/run"]


def test_scripts_pass_shellcheck() -> None:
    assert shutil.which("shellcheck"), "shellcheck missing: deploy/setup.sh --test installs it"
    done = subprocess.run(
        ["shellcheck", *map(str, SCRIPTS)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout[-4000:]


def test_installer_help_lists_its_modes() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy/install.sh"), "--help"],
        capture_output=True, text=True, check=False, timeout=30,
    )  # fmt: skip
    assert done.returncode == 0
    for option in ("--site", "--yes", "--upgrade", "--uninstall", "--purge", "--no-influxdb"):
        assert option in done.stdout, option
