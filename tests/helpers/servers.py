"""Real servers for the tests: Mosquitto, InfluxDB 1.x and VictoriaMetrics.

Each runs as a subprocess on a free 127.0.0.1 port with its data in a temp dir, and can be
stopped and started again on the same port and data (outage and restart tests).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

from microfactory.cli.ports import free_port


def wait_for_port(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listening on {host}:{port} after {timeout_s} s"
                ) from None
            time.sleep(0.05)


def _exe(*candidates: str) -> str:
    for c in candidates:
        if Path(c).exists():
            return c
        found = shutil.which(c)
        if found:
            return found
    raise FileNotFoundError(
        f"none of {candidates} is installed; run .ci/run (it installs the Debian packages)"
    )


class ServerProcess:
    """A server subprocess that can be stopped and restarted on the same port and data."""

    name = "server"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        log = (self.workdir / f"{self.name}.log").open("ab")
        self.proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        try:
            self.wait_ready()
        except TimeoutError:
            self.stop()
            tail = (self.workdir / f"{self.name}.log").read_text(errors="replace")[-2000:]
            raise TimeoutError(f"{self.name} did not start on port {self.port}:\n{tail}") from None

    def wait_ready(self) -> None:
        wait_for_port(self.port)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener: the CA that signed the broker's certificate, and its certificate/key."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


class Mosquitto(ServerProcess):
    """Mosquitto on ``port``; optionally with a password file and a TLS listener on ``tls_port``.

    ``anonymous=False`` with a ``password_file`` (written by ``mosquitto_passwd``) refuses
    clients that do not log in; both apply to every listener.
    """

    name = "mosquitto"

    def __init__(
        self,
        workdir: Path,
        port: int | None = None,
        *,
        persistence: bool = True,
        extra: str = "",
        anonymous: bool = True,
        password_file: Path | None = None,
        tls: MosquittoTls | None = None,
    ) -> None:
        super().__init__(workdir, port)
        self.persistence = persistence
        self.extra = extra
        self.anonymous = anonymous
        self.password_file = password_file
        self.tls = tls
        self.tls_port = free_port() if tls is not None else None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    @property
    def tls_url(self) -> str:
        if self.tls_port is None:
            raise ValueError("this Mosquitto has no TLS listener (pass tls=MosquittoTls(...))")
        return f"mqtts://127.0.0.1:{self.tls_port}"

    def command(self) -> list[str]:
        conf = self.workdir / "mosquitto.conf"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if self.anonymous else 'false'}",
            f"password_file {self.password_file}" if self.password_file else "",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "autosave_interval 1",
            "log_dest stdout",
            "log_type error",
            "log_type warning",
            # started as root, Mosquitto drops to user 'mosquitto', which cannot write its
            # persistence file into our temp dir: sessions would silently not survive a restart
            "user root" if os.geteuid() == 0 else "",
            self.extra,
        ]
        if self.tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {self.tls.cafile}",
                f"certfile {self.tls.certfile}",
                f"keyfile {self.tls.keyfile}",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        conf.write_text("\n".join(lines) + "\n")
        return [_exe("/usr/sbin/mosquitto", "mosquitto"), "-c", str(conf)]

    def wait_ready(self) -> None:
        wait_for_port(self.port)
        if self.tls_port is not None:
            wait_for_port(self.tls_port)


class MosquittoConfigured(ServerProcess):
    """Mosquitto running exactly the config file it is given (``microfactory broker config``'s).

    The config says where it listens: ``port`` and ``other_ports`` are only what to wait for.
    """

    name = "mosquitto"

    def __init__(
        self, workdir: Path, config: Path, port: int, *, other_ports: tuple[int, ...] = ()
    ) -> None:
        super().__init__(workdir, port)
        self.config = config
        self.other_ports = other_ports

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [_exe("/usr/sbin/mosquitto", "mosquitto"), "-c", str(self.config)]

    def wait_ready(self) -> None:
        for port in (self.port, *self.other_ports):
            wait_for_port(port)


class InfluxDB1(ServerProcess):
    """InfluxDB 1.x (Debian's 1.6.7) with HTTP on ``port`` and everything under workdir."""

    name = "influxd"

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        super().__init__(workdir, port)
        self.rpc_port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        d = self.workdir
        conf = d / "influxdb.conf"
        conf.write_text(
            f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{d}/meta"
[data]
  dir = "{d}/data"
  wal-dir = "{d}/wal"
  query-log-enabled = false
[http]
  bind-address = "127.0.0.1:{self.port}"
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[subscriber]
  enabled = false
"""
        )
        return [_exe("/usr/bin/influxd", "influxd"), "-config", str(conf)]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError

    def query(self, q: str, db: str) -> list[dict[str, Any]]:
        """Run InfluxQL; return the series of the first statement (empty list if none)."""
        params = urllib.parse.urlencode({"q": q, "db": db, "epoch": "ns"})
        with urllib.request.urlopen(f"{self.url}/query?{params}", timeout=30) as resp:
            body = json.loads(resp.read())
        result = body["results"][0]
        if "error" in result:
            raise AssertionError(f"InfluxQL error for {q!r}: {result['error']}")
        series: list[dict[str, Any]] = result.get("series", [])
        return series

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """Flatten a query's series into dicts (tags merged in)."""
        out = []
        for s in self.query(q, db):
            tags = s.get("tags", {})
            for values in s["values"]:
                row = dict(zip(s["columns"], values, strict=True))
                row.update(tags)
                out.append(row)
        return out


class VictoriaMetrics(ServerProcess):
    """VictoriaMetrics: the real engine here behind influxdb-client's ``/api/v2/write``."""

    name = "victoria-metrics"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        return [
            _exe("/usr/bin/victoria-metrics", "victoria-metrics"),
            f"-storageDataPath={self.workdir}/data",
            f"-httpListenAddr=127.0.0.1:{self.port}",
            "-retentionPeriod=100y",
            "-loggerLevel=ERROR",
        ]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError

    def export(self, match: str) -> list[dict[str, Any]]:
        """All raw samples of the series matching ``match`` (JSON lines of /api/v1/export)."""
        urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=10).close()
        # accelerated simulations write the future: ask for everything up to a year ahead
        end = int(time.time()) + 365 * 86400
        params = urllib.parse.urlencode({"match[]": match, "start": "0", "end": str(end)})
        with urllib.request.urlopen(f"{self.url}/api/v1/export?{params}", timeout=30) as resp:
            return [json.loads(line) for line in resp.read().splitlines() if line.strip()]
