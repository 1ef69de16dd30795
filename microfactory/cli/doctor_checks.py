"""The checks behind ``microfactory doctor``: each one small, each saying what to do.

A check never raises and never prints a secret: it returns :class:`Finding` lines. They
look at a *live* install from the outside, the way an integrator would with curl and
mosquitto_sub, so they need nothing from the running programs but their public answers.

The broker check deliberately does not log in as the gateway: the generated broker config
binds client ids to usernames, and a second login would take over the live gateway's session.
It checks that the broker answers and refuses an anonymous client instead; whether the
gateway itself is connected is what its ``/healthz`` says.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import shutil
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from microfactory.mqtt.settings import MqttSettings

Level = Literal["OK", "WARN", "FAIL"]
TIMEOUT_S = 5.0
CERT_WARN_DAYS = 30
DISK_FAIL_BYTES = 50 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Finding:
    level: Level
    name: str
    text: str

    def line(self) -> str:
        return f"{self.level:<4} {self.name}: {self.text}"


def read_env_file(path: Path | None) -> dict[str, str]:
    """``KEY=VALUE`` lines of a systemd EnvironmentFile (comments and blanks skipped)."""
    if path is None or not path.is_file():
        return {}
    env: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        key, sep, value = line.partition("=")
        if sep and key and not line.startswith("#"):
            env[key.strip()] = value.strip().strip('"').strip("'")
    return env


@contextlib.contextmanager
def environment(extra: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``extra`` on top, as the service sees it; put back afterwards."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def http_get(url: str, auth: tuple[str, str] | None = None) -> tuple[int, str]:
    """(status, body) of a GET; status 0 with the error's words when nothing answers."""
    req = urllib.request.Request(url)
    if auth is not None:
        import base64

        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return int(resp.status), resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return int(err.code), err.read().decode("utf-8", "replace")
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        return 0, str(reason)


def check_broker(settings: MqttSettings) -> list[Finding]:
    """The broker answers, and refuses a client without a login (through our MQTT client)."""
    from microfactory.mqtt.client import ConnectRefused, MqttClient, Reconnect

    address = settings.address
    where = f"{address.host}:{address.port}"
    try:
        socket.create_connection((address.host, address.port), timeout=TIMEOUT_S).close()
    except OSError as err:
        return [
            Finding(
                "FAIL",
                "broker",
                f"nothing answers at {where} ({err.strerror or err}): is Mosquitto running?",
            )
        ]
    found = [Finding("OK", "broker", f"{where} answers")]
    anonymous = settings.model_copy(
        update={
            "client_id": f"microfactory-doctor-{uuid.uuid4().hex[:8]}",
            "username": None,
            "password": None,
            "username_from_client_id": False,
        }
    )
    client = MqttClient(anonymous, name="doctor", reconnect=Reconnect.SINGLE_SESSION)

    async def attempt() -> None:
        try:
            await client.connect(TIMEOUT_S)
        finally:
            await client.close()

    try:
        asyncio.run(attempt())
    except ConnectRefused:
        found.append(Finding("OK", "broker security", "anonymous clients are refused"))
    except (OSError, TimeoutError) as err:
        found.append(Finding("FAIL", "broker", f"{where} answers but MQTT fails: {err}"))
    else:
        found.append(
            Finding(
                "FAIL",
                "broker security",
                "the broker accepts anonymous clients: anyone on the network can forge machine "
                "events; give it the config of `microfactory broker config`",
            )
        )
    return found


def check_gateway(url: str) -> Finding:
    """The gateway's ``/healthz``: up, or down with its reasons."""
    status, body = http_get(url)
    if status == 0:
        return Finding("FAIL", "gateway", f"{url} does not answer ({body}): is it running?")
    try:
        data = json.loads(body)
    except ValueError:
        return Finding("FAIL", "gateway", f"{url} answers {status}, not JSON: another program?")
    if status == 200:
        return Finding("OK", "gateway", f"healthy ({url})")
    reasons = "; ".join(f"{r.get('name')}: {r.get('detail')}" for r in data.get("reasons", []))
    return Finding("FAIL", "gateway", f"down: {reasons or status}")


def check_influx_v1(url: str, database: str, username: str | None, password: str | None) -> Finding:
    """InfluxDB 1.x answers and holds the gateway's database."""
    base = url.rstrip("/")
    status, body = http_get(f"{base}/ping")
    if status == 0:
        return Finding("FAIL", "influxdb", f"{base} does not answer ({body}): is InfluxDB running?")
    auth = (username, password) if username and password else None
    query = urllib.parse.urlencode({"q": "SHOW DATABASES"})
    status, body = http_get(f"{base}/query?{query}", auth)
    if status != 200:
        return Finding("FAIL", "influxdb", f"SHOW DATABASES answered {status}: check the login")
    try:
        values = json.loads(body)["results"][0]["series"][0].get("values", [])
    except (ValueError, KeyError, IndexError):
        values = []
    if [database] in values:
        return Finding("OK", "influxdb", f"{base} answers, database {database} exists")
    return Finding(
        "FAIL",
        "influxdb",
        f"database {database} does not exist on {base}: the gateway creates it when it "
        "connects with rights to; otherwise CREATE DATABASE it",
    )


def check_mes(url: str, gateway_site: str, mes_env_site: str | None) -> list[Finding]:
    """The MES answers and serves the gateway's site: a mismatch means no event counts."""
    found: list[Finding] = []
    if mes_env_site is not None and mes_env_site != gateway_site:
        found.append(
            Finding(
                "FAIL",
                "site id",
                f"the gateway's site.yaml says site {gateway_site!r} but mes.env says "
                f"MICROFACTORY_MES__SITE={mes_env_site!r}: the MES ignores the gateway's "
                "events; give both the same id",
            )
        )
    status, body = http_get(f"{url.rstrip('/')}/api/v1/health")
    if status == 0:
        found.append(Finding("FAIL", "mes", f"{url} does not answer ({body}): is it running?"))
        return found
    try:
        health = json.loads(body)
    except ValueError:
        found.append(Finding("FAIL", "mes", f"{url} answers {status}, not the MES's JSON"))
        return found
    site = health.get("site")
    if site != gateway_site:
        found.append(
            Finding(
                "FAIL",
                "site id",
                f"the MES at {url} serves site {site!r}, the gateway site {gateway_site!r}: set "
                "`site:` in site.yaml or MICROFACTORY_MES__SITE in mes.env so they agree",
            )
        )
    else:
        mqtt = health.get("mqtt")
        level: Level = "OK" if mqtt == "connected" else "WARN"
        found.append(Finding(level, "mes", f"{url} serves site {site!r}, broker link {mqtt}"))
    return found


def check_disk(path: Path) -> Finding:
    """Free space where the spool lives (a full disk stops the gateway acknowledging)."""
    try:
        usage = shutil.disk_usage(path)
    except OSError as err:
        return Finding("FAIL", "disk", f"cannot read free space of {path}: {err.strerror}")
    free_mib = usage.free // (1024 * 1024)
    share = usage.free / usage.total if usage.total else 0.0
    text = f"{free_mib} MiB free on {path} ({share:.0%})"
    if usage.free < DISK_FAIL_BYTES or share < 0.01:
        return Finding("FAIL", "disk", text + ": free space now, the spool needs it")
    if share < 0.10:
        return Finding("WARN", "disk", text)
    return Finding("OK", "disk", text)


class _Timex(ctypes.Structure):
    """``struct timex`` (linux/timex.h): only the leading fields are read."""

    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("padding", ctypes.c_byte * 200),
    ]


STA_UNSYNC = 0x0040
TIME_ERROR = 5


def check_clock() -> Finding:
    """Whether the kernel says the clock is synchronised (NTP): timestamps depend on it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError) as err:
        return Finding("WARN", "clock", f"cannot ask the kernel ({err}): synchronisation unknown")
    if state < 0:
        return Finding("WARN", "clock", "adjtimex failed: synchronisation unknown")
    if state == TIME_ERROR or tx.status & STA_UNSYNC:
        return Finding(
            "WARN",
            "clock",
            "not synchronised (no NTP?): sample and event times may drift; enable "
            "systemd-timesyncd or chrony",
        )
    return Finding("OK", "clock", f"synchronised (max error {tx.maxerror} µs)")


def check_certificate(name: str, path: Path, now: datetime | None = None) -> Finding:
    """A certificate's expiry (PEM, or DER as OPC UA uses): expired FAIL, within 30 days WARN."""
    from cryptography import x509

    try:
        raw = path.read_bytes()
        if b"-----BEGIN" in raw:
            cert = x509.load_pem_x509_certificate(raw)
        else:
            cert = x509.load_der_x509_certificate(raw)
    except (OSError, ValueError) as err:
        return Finding("FAIL", f"certificate {name}", f"cannot read {path}: {err}")
    ends = cert.not_valid_after_utc
    days = (ends - (now or datetime.now(UTC))).days
    when = ends.strftime("%Y-%m-%d")
    if days < 0:
        return Finding("FAIL", f"certificate {name}", f"{path} expired on {when}: renew it")
    if days < CERT_WARN_DAYS:
        return Finding("WARN", f"certificate {name}", f"{path} expires on {when} ({days} days)")
    return Finding("OK", f"certificate {name}", f"{path} valid until {when}")
