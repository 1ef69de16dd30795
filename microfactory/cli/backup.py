"""``microfactory backup`` and ``microfactory restore``: the commands the installer's upgrade
and the backup timer run (logic in :mod:`backup_archive`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .backup_archive import BackupError, Sources
from .backup_archive import backup as make_backup
from .backup_archive import restore as do_restore

DataDir = Annotated[Path, typer.Option(help="gateway and MES data")]
ConfigDir = Annotated[Path, typer.Option(help="site config and env files")]
BrokerDir = Annotated[Path, typer.Option(help="generated Mosquitto config")]


def backup(
    data_dir: DataDir = Path("/var/lib/microfactory"),
    config_dir: ConfigDir = Path("/etc/microfactory"),
    broker_dir: BrokerDir = Path("/etc/mosquitto/microfactory"),
    dest: Annotated[Path, typer.Option(help="archive folder (0700)")] = Path(
        "/var/backups/microfactory"
    ),
    keep: Annotated[int, typer.Option(help="newest archives kept")] = 14,
) -> None:
    """One consistent 0600 archive of a running install (SQLite online), then rotation."""
    try:
        path = make_backup(Sources(data_dir, config_dir, broker_dir), dest, keep)
    except BackupError as err:
        typer.echo(f"backup: {err}", err=True)
        raise typer.Exit(1) from err
    typer.echo(str(path))


def restore(
    archive: Annotated[Path, typer.Argument(help="microfactory-backup-*.tar.gz")],
    data_dir: DataDir = Path("/var/lib/microfactory"),
    config_dir: ConfigDir = Path("/etc/microfactory"),
    broker_dir: BrokerDir = Path("/etc/mosquitto/microfactory"),
    force: Annotated[bool, typer.Option(help="move existing files aside, then restore")] = False,
) -> None:
    """Verify an archive's checksums, then restore it; stop the gateway and MES first."""
    try:
        moved = do_restore(archive, Sources(data_dir, config_dir, broker_dir), force)
    except BackupError as err:
        typer.echo(f"restore: {err}", err=True)
        raise typer.Exit(1) from err
    for path in moved:
        typer.echo(f"restore: previous files kept in {path}")
    typer.echo(f"restore: done from {archive}")
