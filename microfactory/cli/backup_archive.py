"""Backup and restore of an installation as one checksummed ``tar.gz``.

Why a module of its own: the installer's upgrade and the systemd timer call the same code as
an operator does, and the rules that matter (SQLite copied with the online backup API while
the programs write, 0600 archives, rotation, restore that verifies before it touches
anything and never deletes) are easier to test away from typer.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import socket
import sqlite3
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ARCHIVE_RE = re.compile(r"^microfactory-backup-\d{8}T\d{6}Z\.tar\.gz$")
MANIFEST = "manifest.json"
# archive top-level folder per source directory
SECTIONS = ("data", "config", "broker")
SECRET_HINTS = ("passwd", ".env", "secret", "key", ".pem", "acl")


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why, for the operator."""


@dataclass(frozen=True)
class Sources:
    data: Path
    config: Path
    broker: Path

    def items(self) -> list[tuple[str, Path]]:
        return [("data", self.data), ("config", self.config), ("broker", self.broker)]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_sqlite(path: Path) -> bool:
    if path.suffix not in (".sqlite", ".db", ".sqlite3"):
        return False
    with path.open("rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


def _online_copy(src: Path, dst: Path) -> None:
    """SQLite's online backup API: a consistent copy even while a writer is busy (WAL)."""
    source = sqlite3.connect(f"file:{src}?mode=ro", uri=True, timeout=30)
    target = sqlite3.connect(dst)
    try:
        with target:
            source.backup(target)
    finally:
        target.close()
        source.close()


def _package_version() -> str:
    try:
        return version("microfactory")
    except PackageNotFoundError:
        return "unknown"


def _check_dir(name: str, path: Path) -> None:
    if not path.is_dir():
        raise BackupError(f"{name} directory {path} is missing")
    if not os.access(path, os.R_OK | os.X_OK):
        raise BackupError(f"{name} directory {path} is not readable")


def _stage(sources: Sources, stage: Path) -> dict[str, object]:
    files: list[dict[str, str]] = []
    online: list[str] = []
    for section, root in sources.items():
        for src in sorted(p for p in root.rglob("*") if p.is_file()):
            rel = src.relative_to(root)
            if src.name.endswith(("-wal", "-shm", "-journal")):
                continue  # the online copy already holds what they add
            name = f"{section}/{rel.as_posix()}"
            out = stage / name
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                if _is_sqlite(src):
                    _online_copy(src, out)
                    online.append(name)
                else:
                    shutil.copy2(src, out)
            except (OSError, sqlite3.Error) as err:
                raise BackupError(f"cannot read {src}: {err}") from err
            files.append({"path": name, "sha256": _sha256(out)})
    return {
        "format": 1,
        "microfactory_version": _package_version(),
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "host": socket.gethostname(),
        "sources": {s: str(p) for s, p in sources.items()},
        "sqlite_online": online,
        "postgresql": "not included: dump a PostgreSQL MES with pg_dump separately",
        "files": files,
    }


def backup(sources: Sources, dest: Path, keep: int, now: datetime | None = None) -> Path:
    """Write one archive (0600, in a 0700 ``dest``) atomically, then keep the newest ``keep``."""
    if keep < 1:
        raise BackupError("--keep must be at least 1")
    for section, root in sources.items():
        _check_dir(section, root)
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(dest, 0o700)
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    final = dest / f"microfactory-backup-{stamp}.tar.gz"
    with tempfile.TemporaryDirectory(dir=dest, prefix=".stage-") as tmp:
        stage = Path(tmp) / "stage"
        stage.mkdir()
        manifest = _stage(sources, stage)
        part = Path(tmp) / "archive.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
            body = json.dumps(manifest, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(body), 0o600
            tar.addfile(info, io.BytesIO(body))
            for entry in manifest["files"]:  # type: ignore[attr-defined]
                tar.add(stage / entry["path"], arcname=entry["path"], recursive=False)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(part, final)
    rotate(dest, keep)
    return final


def rotate(dest: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` archives (only names of our pattern); the deleted."""
    archives = sorted(p for p in dest.iterdir() if ARCHIVE_RE.match(p.name))
    old = archives[:-keep] if keep else archives
    for p in old:
        p.unlink()
    return old


def _read_verified(archive: Path, into: Path) -> dict[str, object]:
    """Extract into ``into`` and check every checksum; raise before anything else is touched."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (OSError, tarfile.TarError, EOFError) as err:
        raise BackupError(f"{archive}: unreadable archive: {err}") from err
    try:
        manifest: dict[str, object] = json.loads((into / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise BackupError(f"{archive}: no valid manifest: {err}") from err
    listed = set()
    for entry in manifest.get("files", []):  # type: ignore[attr-defined]
        path = into / entry["path"]
        listed.add(entry["path"])
        if not path.is_file() or _sha256(path) != entry["sha256"]:
            raise BackupError(f"{archive}: checksum mismatch on {entry['path']}: refused")
    extra = (
        {p.relative_to(into).as_posix() for p in into.rglob("*") if p.is_file()}
        - listed
        - {MANIFEST}
    )
    if extra:
        raise BackupError(f"{archive}: files not in the manifest: {sorted(extra)[:3]}: refused")
    return manifest


def _non_empty(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _locked(db: Path) -> bool:
    """True when another process holds a write transaction (a running gateway or MES)."""
    try:
        con = sqlite3.connect(db, timeout=0.2)
        try:
            con.execute("BEGIN IMMEDIATE")
            con.rollback()
        finally:
            con.close()
    except sqlite3.OperationalError:
        return True
    return False


def _ids(user: str, group: str) -> tuple[int, int] | None:
    """(uid, gid) of ``user``:``group`` when running as root and both exist, else None."""
    if os.geteuid() != 0:
        return None
    import grp
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        return None


def _layout(section: str, path: Path) -> tuple[int, tuple[int, int] | None]:
    """Mode and owner of a restored file, as deploy/install.sh lays the install out.

    Data belongs to the service user; the config is root's, readable by the service group
    (the first admin's password root's alone); the broker's users and ACL are readable by
    Mosquitto, which drops to its own user before reading them.
    """
    if section == "data":
        return 0o600, _ids("microfactory", "microfactory")
    if section == "broker":
        if path.name in ("passwd", "acl"):
            return 0o640, _ids("root", "mosquitto")
        if path.name == "mosquitto.conf":
            return 0o644, None
        return 0o600, None
    if path.name == "admin-password":
        return 0o600, None
    return (0o600 if _is_secret(path) else 0o640), _ids("root", "microfactory")


def _is_secret(path: Path) -> bool:
    return any(h in path.name for h in SECRET_HINTS)


def restore(archive: Path, targets: Sources, force: bool) -> list[Path]:
    """Put an archive back; existing data moved aside (``--force``), never deleted.

    Returns the folders the previous contents were moved to.
    """
    if not archive.is_file():
        raise BackupError(f"{archive}: no such archive")
    moved: list[Path] = []
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="microfactory-restore-") as tmp:
        staged = Path(tmp)
        _read_verified(archive, staged)
        busy = [
            db
            for _, root in targets.items()
            if root.is_dir()
            for db in root.rglob("*.sqlite")
            if _locked(db)
        ]
        if busy:
            raise BackupError(f"{busy[0]} is in use (a running gateway or MES?): stop them first")
        occupied = [root for _, root in targets.items() if _non_empty(root)]
        if occupied and not force:
            raise BackupError(
                f"{occupied[0]} is not empty: give --force to move it aside and restore"
            )
        dir_owner = _ids("microfactory", "microfactory")
        for section, root in targets.items():
            src = staged / section
            if not src.is_dir():
                continue
            if _non_empty(root):
                aside = root.with_name(f"{root.name}.before-restore-{stamp}")
                root.rename(aside)
                moved.append(aside)
            root.mkdir(parents=True, exist_ok=True, mode=0o750)
            for path in sorted(src.rglob("*")):
                out = root / path.relative_to(src)
                if path.is_dir():
                    out.mkdir(exist_ok=True, mode=0o750)
                    if section == "data" and dir_owner is not None:
                        os.chown(out, *dir_owner)
                    continue
                out.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
                shutil.copy2(path, out)
                mode, owner = _layout(section, out)
                os.chmod(out, mode)
                if owner is not None:
                    os.chown(out, *owner)
            if section == "data" and dir_owner is not None:
                os.chown(root, *dir_owner)
    return moved
