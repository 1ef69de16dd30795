"""``deploy/install.sh`` for real, in a fresh Debian bookworm root made by debootstrap.

There is no systemd here (PID 1 is not systemd): the installer runs in a chroot and, as it
does wherever systemd is not running, installs the units without starting them. The test
then starts InfluxDB, Mosquitto and the installed gateway and MES by hand, each as its unit
says, in a network namespace of their own, and checks the install works end to end:
anonymous clients refused, a machine's sample through the generated broker login into
InfluxDB (whose database the gateway created itself, InfluxDB having been down during the
install), the MES on the same site id, the admin's login. Then a second run (changes
nothing), ``--upgrade`` (a backup first) and ``--uninstall`` (data kept).

apt-get and pip inside the root use the package registries (the host's apt settings and CA
bundle are copied in, its pip cache shared); nothing else leaves 127.0.0.1.
Set ``MICROFACTORY_INSTALL_TRANSCRIPT=path`` to keep the first install's transcript.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SITE = "acme-north"
# What a root needs from the host to reach the package registries the way the host does.
HOST_FILES = ["/etc/resolv.conf", "/etc/apt/apt.conf.d/99artifact-registry"]


def run(cmd: list[str], timeout: float, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        cmd, capture_output=True, text=True, timeout=timeout, check=False, **kw
    )


@contextlib.contextmanager
def debian_root(base: Path) -> Iterator[Path]:
    """A fresh bookworm root with /proc, /dev, /sys and the pip cache mounted; all unmounted."""
    if shutil.which("debootstrap") is None:
        got = run(["apt-get", "install", "-y", "-qq", "debootstrap"], 300)
        assert got.returncode == 0, got.stderr[-2000:]
    root = base / "root"
    started = time.monotonic()
    made = run(["debootstrap", "--variant=minbase", "bookworm", str(root)], 600)
    assert made.returncode == 0, made.stdout[-2000:] + made.stderr[-2000:]
    print(f"debootstrap: {time.monotonic() - started:.0f} s")
    for name in HOST_FILES:
        if Path(name).exists():
            (root / name.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(name, root / name.lstrip("/"))
    (root / "etc/ssl").mkdir(exist_ok=True)
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/host-ca.crt")
    src = root / "src"
    src.mkdir()
    files = run(["git", "ls-files", "-co", "--exclude-standard"], 60, cwd=ROOT).stdout.split()
    for rel in files:
        here = ROOT / rel
        if "node_modules" in rel or not (here.is_file() or here.is_symlink()):
            continue
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        if here.is_symlink():  # microfactory/gateway -> ../gateway and the like
            (src / rel).symlink_to(os.readlink(here))
        else:
            shutil.copy2(here, src / rel)
    pip_cache = Path(os.environ.get("PIP_CACHE_DIR", "/root/.cache/pip"))
    pip_cache.mkdir(parents=True, exist_ok=True)
    (root / "root/.cache/pip").mkdir(parents=True, exist_ok=True)
    mounts = [
        (["-t", "proc", "proc"], root / "proc"),
        (["--rbind", "/dev"], root / "dev"),
        (["-t", "sysfs", "sys"], root / "sys"),
        (["--bind", str(pip_cache)], root / "root/.cache/pip"),
    ]
    done: list[Path] = []
    try:
        for args, target in mounts:
            assert run(["mount", *args, str(target)], 30).returncode == 0, target
            done.append(target)
        yield root
    finally:
        for target in reversed(done):
            run(["umount", "-R", str(target)], 60)


def in_root(root: Path, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """``command`` in the root with a clean environment (as root, in the host's network)."""
    env = [
        "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
        "PIP_CERT=/etc/ssl/host-ca.crt",
        "LANG=C.UTF-8",
    ]
    return run(["chroot", str(root), "/usr/bin/env", "-i", *env, "bash", "-c", command], timeout)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_install_on_a_fresh_debian_root(tmp_path: Path) -> None:
    with debian_root(tmp_path) as root:
        started = time.monotonic()
        first = in_root(root, f"bash /src/deploy/install.sh --site {SITE} --yes", 900)
        took = time.monotonic() - started
        transcript = f"$ bash deploy/install.sh --site {SITE} --yes   # {took:.0f} s\n"
        transcript += first.stdout + first.stderr
        (tmp_path / "install-transcript.txt").write_text(transcript)
        if keep := os.environ.get("MICROFACTORY_INSTALL_TRANSCRIPT"):
            Path(keep).write_text(transcript)
        print(f"first install: {took:.0f} s")
        assert first.returncode == 0, transcript[-4000:]
        assert "install: done. Site id: acme-north" in first.stdout

        # what it laid out, with the modes secrets need
        etc = root / "etc/microfactory"
        assert mode(etc / "admin-password") == 0o600
        for name in ("gateway.env", "mes.env", "site.yaml"):
            assert mode(etc / name) == 0o640, name
        assert mode(root / "etc/mosquitto/microfactory/passwd") in (0o600, 0o640)
        assert mode(root / "var/lib/microfactory") == 0o750
        assert f"site: {SITE}\n" in (etc / "site.yaml").read_text()
        assert f"MICROFACTORY_MES__SITE={SITE}\n" in (etc / "mes.env").read_text()
        units = root / "etc/systemd/system"
        gateway_unit = (units / "microfactory-gateway.service").read_text()
        assert "Type=notify" in gateway_unit and "WatchdogSec=" in gateway_unit
        assert (units / "microfactory-backup.timer").exists()
        assert (root / "etc/systemd/journald.conf.d/microfactory.conf").exists()

        # a second run changes nothing
        started = time.monotonic()
        second = in_root(root, f"bash /src/deploy/install.sh --site {SITE} --yes", 600)
        print(f"second install: {time.monotonic() - started:.0f} s")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert "nothing changed: already installed" in second.stdout, second.stdout[-3000:]

        # the installed stack, started as its units say, in a network namespace of its own
        shutil.copy(Path(__file__).with_name("installed_stack.py"), root / "root/stack.py")
        started = time.monotonic()
        stack = run(
            [
                "unshare",
                "--net",
                "bash",
                "-c",
                f"ip link set lo up && chroot {root} /usr/bin/env -i PATH=/usr/sbin:/usr/bin"
                ":/sbin:/bin LANG=C.UTF-8 /opt/microfactory/.venv/bin/python /root/stack.py",
            ],
            300,
        )
        print(f"stack check: {time.monotonic() - started:.0f} s")
        assert stack.returncode == 0, stack.stdout[-3000:] + stack.stderr[-3000:]
        found = json.loads(stack.stdout)
        logs = json.dumps(found.pop("logs"), indent=1)[-6000:]
        print(json.dumps(found, indent=1))
        assert found["influxdb_up"] and found["broker_up"], logs
        assert found["gateway_health_up"] and found["mes_up"], logs
        assert found["anonymous_connack"] != 0, "the installed broker accepts anonymous clients"
        assert found["machine_connack"] != 0, "the installed broker accepts a wrong password"
        assert found["machine_published"], logs
        assert found["influx_has_sample"], logs
        assert found["healthz"][0] == 200, found["healthz"]
        status, body = found["mes_health"]
        assert status == 200 and json.loads(body)["site"] == SITE, found["mes_health"]
        assert json.loads(body)["mqtt"] == "connected", found["mes_health"]  # its broker login
        assert found["admin_login"] == 200, logs
        assert found["gateway_running"] and found["mes_running"], logs

        # --upgrade: a backup first, the new code, still working
        started = time.monotonic()
        upgrade = in_root(root, "bash /src/deploy/install.sh --upgrade --yes", 900)
        print(f"upgrade: {time.monotonic() - started:.0f} s")
        assert upgrade.returncode == 0, upgrade.stdout[-3000:] + upgrade.stderr[-3000:]
        backups = sorted((root / "var/backups/microfactory").glob("microfactory-backup-*.tar.gz"))
        assert len(backups) == 1 and mode(backups[0]) == 0o600, backups
        assert mode(root / "var/backups/microfactory") == 0o700
        assert (root / "opt/microfactory/.venv/bin/microfactory").exists()

        # --uninstall: programs and units gone, data and config kept
        gone = in_root(root, "bash /src/deploy/install.sh --uninstall", 300)
        assert gone.returncode == 0, gone.stdout[-3000:] + gone.stderr[-3000:]
        assert not (root / "opt/microfactory/.venv").exists()
        assert not (units / "microfactory-gateway.service").exists()
        assert (root / "var/lib/microfactory/spool.sqlite").exists()
        assert (etc / "site.yaml").exists()
