"""The wheel as a user installs it: one import name, real files, one extra per program.

Builds the wheel from a copy of the source (the tree stays clean), installs it into fresh
venvs with the outer pip (``pip --python``) and checks what each install can and cannot do:
no extra imports the contract with pydantic alone; ``[gateway]`` has no FastAPI and no
SQLAlchemy, lists every built-in plugin and runs ``config check``, and the commands of the
programs it lacks name the extra to install. Needs the package index (or pip's cache).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "microfactory", "gateway", "services", "simulators")
ADAPTERS = {"modbus", "mqtt", "opcua", "sparkplug"}
SINKS = {"influxdb_v1", "influxdb_v2", "local_history", "mes_events"}


def _run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _ok(result: subprocess.CompletedProcess[str], what: str) -> str:
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built with build isolation from a copy of the checkout (symlinks kept)."""
    work = tmp_path_factory.mktemp("wheel")
    src = work / "src"
    src.mkdir()
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(
                path, src / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy(path, src / name)
    dist = work / "dist"
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)]
    _ok(_run(pip, cwd=work), "pip wheel")
    (built,) = dist.glob("microfactory-*.whl")
    return built


def _venv(wheel: Path, where: Path, extra: str = "") -> Path:
    """A fresh venv with the wheel (and ``extra``) installed; its python."""
    _ok(_run([sys.executable, "-m", "venv", "--without-pip", str(where)], cwd=where.parent), "venv")
    python = where / "bin" / "python"
    target = f"{wheel}[{extra}]" if extra else str(wheel)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", target]
    _ok(_run(pip, cwd=where.parent), f"pip install {target}")
    return python


def _python(python: Path, code: str) -> str:
    return _ok(_run([str(python), "-c", code], cwd=python.parents[2]), f"python -c {code!r}")


def test_the_wheel_holds_one_import_name_with_real_files(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as whl:
        infos = {info.filename: info for info in whl.infolist()}
        dist_info = next(n.split("/")[0] for n in infos if n.endswith(".dist-info/METADATA"))
        top_level = whl.read(f"{dist_info}/top_level.txt").decode().split()
        entry_points = whl.read(f"{dist_info}/entry_points.txt").decode()
    assert top_level == ["microfactory"], f"top_level.txt holds {top_level}"
    strays = [n for n in infos if not n.startswith(("microfactory/", f"{dist_info}/"))]
    assert not strays, f"files outside microfactory/ in the wheel: {strays[:10]}"
    for name in (
        "microfactory/contract.py",
        "microfactory/py.typed",
        "microfactory/gateway/runtime.py",
        "microfactory/gateway/adapters/opcua/adapter.py",
        "microfactory/gateway/adapters/modbus/maps/eastron_sdm630.yaml",  # the meter library
        "microfactory/gateway/adapters/sparkplug/sparkplug_b.proto",
        "microfactory/mes/server.py",
        "microfactory/mes/migrations/env.py",
        "microfactory/mes/web/static/index.html",
        "microfactory/mes/wordlists/common_passwords.txt",  # the password blocklist
        "microfactory/mes/web/static/docs-init.js",  # /docs offline
        "microfactory/sim/workshop.py",
    ):
        info = infos.get(name)
        assert info is not None, f"{name} is not in the wheel"
        mode = info.external_attr >> 16
        assert not stat.S_ISLNK(mode), f"{name} is a symlink in the wheel, not a file"
        assert info.file_size > 0 or name.endswith("py.typed"), f"{name} is empty in the wheel"
    assert "microfactory = microfactory.cli:app" in entry_points


def test_no_extra_imports_the_contract_with_pydantic_alone(wheel: Path, tmp_path: Path) -> None:
    python = _venv(wheel, tmp_path / "venv")
    out = _python(
        python,
        "import importlib.metadata as m, microfactory.contract as c;"
        "print(c.__file__);"
        "print(sorted(d.metadata['Name'].lower() for d in m.distributions()))",
    )
    where, dists = out.splitlines()
    assert where.startswith(str(tmp_path)), f"contract imported from {where}, not the venv"
    # pydantic and what pydantic itself needs, nothing of the programs
    for program_dependency in ("paho-mqtt", "asyncua", "fastapi", "sqlalchemy", "pyyaml"):
        assert f"'{program_dependency}'" not in dists, f"{program_dependency} installed: {dists}"


def test_the_gateway_extra_runs_the_gateway_and_nothing_else(wheel: Path, tmp_path: Path) -> None:
    python = _venv(wheel, tmp_path / "venv", "gateway")
    out = _python(
        python,
        "import json, importlib.util as u, importlib.metadata as m;"
        "print(json.dumps({"
        "'mes': [n for n in ('fastapi', 'sqlalchemy', 'uvicorn', 'alembic') if u.find_spec(n)],"
        "'adapters': [e.name for e in m.entry_points(group='microfactory.adapters')],"
        "'sinks': [e.name for e in m.entry_points(group='microfactory.sinks')]}))",
    )
    found = json.loads(out)
    assert found["mes"] == [], f"a gateway install has the MES stack: {found['mes']}"
    assert set(found["adapters"]) >= ADAPTERS, f"adapters listed: {found['adapters']}"
    assert set(found["sinks"]) >= SINKS, f"sinks listed: {found['sinks']}"

    command = str(python.with_name("microfactory"))
    example = ROOT / "docs" / "examples" / "opcua.yaml"
    checked = _run([command, "config", "check", str(example)], cwd=tmp_path)
    assert checked.returncode == 0, f"config check failed:\n{checked.stderr}"
    assert f"{example}: OK" in checked.stdout

    for args, extra in ((["mes", "serve"], "mes"), (["demo", "--duration", "1"], "all")):
        refused = _run([command, *args], cwd=tmp_path, timeout=30)
        assert refused.returncode == 2, f"microfactory {' '.join(args)}: {refused.stderr}"
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1, f"not one line but:\n{refused.stderr}"
        assert f"pip install 'microfactory[{extra}]'" in lines[0], lines[0]


def test_the_mes_extra_runs_the_mes_without_the_gateway_stack(wheel: Path, tmp_path: Path) -> None:
    python = _venv(wheel, tmp_path / "venv", "mes")
    out = _python(
        python,
        "import importlib.util as u, microfactory.mes.server;"
        "print([n for n in ('asyncua', 'influxdb_client', 'amqtt') if u.find_spec(n)])",
    )
    assert out.strip() == "[]", f"an MES install has gateway or demo libraries: {out}"
    command = str(python.with_name("microfactory"))
    helped = _run([command, "mes", "serve", "--help"], cwd=tmp_path, timeout=30)
    assert helped.returncode == 0, f"microfactory mes serve --help: {helped.stderr}"
    example = ROOT / "docs" / "examples" / "opcua.yaml"
    refused = _run([command, "config", "check", str(example)], cwd=tmp_path, timeout=30)
    assert refused.returncode == 2, f"config check without the gateway: {refused.stderr}"
    assert "pip install 'microfactory[gateway]'" in refused.stderr, refused.stderr
