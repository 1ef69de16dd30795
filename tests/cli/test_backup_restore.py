"""Backup and restore on real directories and real SQLite databases (a writer kept open)."""

from __future__ import annotations

import sqlite3
import stat
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from microfactory.cli.backup_archive import BackupError, Sources, backup, restore


def _install(root: Path) -> Sources:
    src = Sources(root / "data", root / "etc", root / "broker")
    for d in src.data, src.config, src.broker:
        d.mkdir(parents=True)
    (src.data / "adapters").mkdir()
    for db in (src.data / "spool.sqlite", src.data / "adapters" / "state.sqlite"):
        with sqlite3.connect(db) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("CREATE TABLE t (v INTEGER)")
            con.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    (src.data / "mes_link.json").write_text("{}")
    (src.config / "site.yaml").write_text("site: a\n")
    (src.broker / "passwd").write_text("gw:$7$hash\n")
    return src


def _count(db: Path) -> int:
    with sqlite3.connect(db) as con:
        return int(con.execute("SELECT count(*) FROM t").fetchone()[0])


def test_backup_while_writing_then_restore_fresh(tmp_path: Path) -> None:
    src = _install(tmp_path / "a")
    writer = sqlite3.connect(src.data / "spool.sqlite")
    writer.execute("INSERT INTO t VALUES (1000)")
    writer.commit()  # in the WAL, not checkpointed: a plain copy of the file would miss it
    archive = backup(src, tmp_path / "bk", keep=3)
    writer.close()
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    assert stat.S_IMODE(archive.parent.stat().st_mode) == 0o700
    with tarfile.open(archive) as tar:
        names = set(tar.getnames())
    assert {"manifest.json", "data/spool.sqlite", "broker/passwd", "config/site.yaml"} <= names
    fresh = Sources(tmp_path / "b" / "data", tmp_path / "b" / "etc", tmp_path / "b" / "broker")
    restore(archive, fresh, force=False)
    assert _count(fresh.data / "spool.sqlite") == 101
    assert _count(fresh.data / "adapters" / "state.sqlite") == 100
    # readable by Mosquitto (group), by nobody else; as deploy/install.sh lays it out
    assert stat.S_IMODE((fresh.broker / "passwd").stat().st_mode) == 0o640
    assert stat.S_IMODE((fresh.config / "site.yaml").stat().st_mode) == 0o640


def test_rotation_keeps_newest(tmp_path: Path) -> None:
    src = _install(tmp_path / "a")
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    dest = tmp_path / "bk"
    dest.mkdir()
    (dest / "notes.txt").write_text("kept")
    made = [backup(src, dest, keep=2, now=t0 + timedelta(hours=i)) for i in range(4)]
    left = sorted(p.name for p in dest.iterdir())
    assert left == sorted([made[2].name, made[3].name, "notes.txt"])


def test_tampered_and_overwrite_refused(tmp_path: Path) -> None:
    src = _install(tmp_path / "a")
    archive = backup(src, tmp_path / "bk", keep=3)
    bad = tmp_path / "bad" / archive.name
    bad.parent.mkdir()
    with tarfile.open(archive) as tin, tarfile.open(bad, "w:gz") as tout:
        for m in tin.getmembers():
            f = tin.extractfile(m)
            data = f.read() if f else b""
            if m.name == "config/site.yaml":
                data = b"site: evil\n"
                m.size = len(data)
            import io

            tout.addfile(m, io.BytesIO(data))
    fresh = Sources(tmp_path / "b" / "data", tmp_path / "b" / "etc", tmp_path / "b" / "broker")
    with pytest.raises(BackupError, match="checksum"):
        restore(bad, fresh, force=False)
    assert not fresh.data.exists()
    with pytest.raises(BackupError, match="not empty"):
        restore(archive, src, force=False)
    moved = restore(archive, src, force=True)
    assert moved and all(p.is_dir() for p in moved)


def test_missing_dir_refused(tmp_path: Path) -> None:
    src = _install(tmp_path / "a")
    with pytest.raises(BackupError, match="missing"):
        backup(Sources(src.data, tmp_path / "nope", src.broker), tmp_path / "bk", keep=1)
