"""A throw-away PostgreSQL server (Debian's ``postgresql`` package) on a free 127.0.0.1 port.

``initdb`` into a fresh temp dir, then ``postgres`` listening on TCP only (no Unix socket),
trust authentication for the loopback. PostgreSQL refuses to run as root, so when the tests run
as root (CI does) the data dir is given to the ``postgres`` system user and both programs run
as that user through ``setpriv`` (no PAM session, no shell, nothing inherited but the env).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from microfactory.cli.ports import free_port

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
RUN_AS = "postgres"


def find_pg_bin() -> Path | None:
    """Newest Debian PostgreSQL bin dir, or the one on PATH."""
    dirs = sorted(glob.glob(PG_BIN_GLOB), key=lambda d: int(Path(d).parent.name), reverse=True)
    for d in dirs:
        if (Path(d) / "initdb").exists():
            return Path(d)
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _drop_privileges_prefix() -> tuple[list[str], int | None, int | None]:
    """Command prefix (and uid/gid) that runs a program as ``postgres`` when we are root."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        pw = pwd.getpwnam(RUN_AS)
    except KeyError as err:
        raise RuntimeError(
            f"running as root and there is no {RUN_AS!r} user to run PostgreSQL as"
        ) from err
    prefix = [
        "setpriv",
        f"--reuid={pw.pw_uid}",
        f"--regid={pw.pw_gid}",
        "--init-groups",
        "--",
    ]
    return prefix, pw.pw_uid, pw.pw_gid


class PostgresServer:
    """``initdb`` + ``postgres`` in a temp dir; ``url(db)`` gives a SQLAlchemy URL."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise FileNotFoundError("PostgreSQL is not installed (apt-get install postgresql)")
        self.bin = bin_dir
        self.port = port or free_port()
        # not under pytest's tmp_path: its parent dirs are 0700 root, postgres could not enter
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="mf-pg-"))
        self.data = self.workdir / "data"
        self.log = self.workdir / "postgres.log"
        self.prefix, self.uid, self.gid = _drop_privileges_prefix()
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _env(self) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "TZ": "UTC"}

    def start(self) -> None:
        if self.uid is not None and self.gid is not None:
            os.chown(self.workdir, self.uid, self.gid)
        if not (self.data / "PG_VERSION").exists():
            subprocess.run(
                [
                    *self.prefix,
                    str(self.bin / "initdb"),
                    "-D",
                    str(self.data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--encoding=UTF8",
                    "--no-sync",
                ],
                check=True,
                capture_output=True,
                env=self._env(),
                cwd=self.workdir,
            )
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [
                    *self.prefix,
                    str(self.bin / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "unix_socket_directories=",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=100",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.workdir,
            )
        self._wait_ready()

    def _wait_ready(self, timeout_s: float = 30.0) -> None:
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited:\n{self.log.read_text()[-2000:]}")
            try:
                with psycopg.connect(
                    host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
                ):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"postgres not ready on port {self.port}:\n{self.log.read_text()[-2000:]}"
                    ) from None
                time.sleep(0.1)

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def whoami(self) -> str:
        """The OS user the server process runs as (checked by a test of the root path)."""
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres"
        ) as conn:
            row = conn.execute("SELECT current_setting('data_directory')").fetchone()
        assert row is not None
        return pwd.getpwuid(Path(str(row[0])).stat().st_uid).pw_name

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()  # SIGTERM: smart shutdown
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
