"""The secrets each program needs to log in to the generated broker, and reading them back.

One password per program and per device: the gateway's connections share one (each still its
own user, so its own ACL), the MES has one, each machine or edge node has its own. They are
written where each program reads them: ``gateway.env`` and ``mes.env`` (systemd
``EnvironmentFile=`` / ``docker --env-file``) and ``devices.csv`` (a table to type into each
device's MQTT settings). Re-running the command reads them back, so passwords stay the same
unless ``--rotate`` asks for new ones.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from .identities import BrokerPlan, Identity

GATEWAY_ENV = "gateway.env"
MES_ENV = "mes.env"
DEVICES_CSV = "devices.csv"

GATEWAY_PASSWORD_VAR = "MICROFACTORY_MQTT__PASSWORD"
GATEWAY_FLAG_VAR = "MICROFACTORY_MQTT__USERNAME_FROM_CLIENT_ID"
MES_USERNAME_VAR = "MICROFACTORY_MES__MQTT_USERNAME"
MES_PASSWORD_VAR = "MICROFACTORY_MES__MQTT_PASSWORD"
MES_SITE_VAR = "MICROFACTORY_MES__SITE"
DEVICE_COLUMNS = ("username", "password", "role", "may_publish", "may_read")


@dataclass(frozen=True, slots=True)
class Secrets:
    """The passwords of a broker config: the gateway's, the MES's, one per device."""

    gateway: str | None
    mes: str | None
    devices: dict[str, str]


def _env(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.lstrip().startswith("#"):
            out[key.strip()] = value.strip()
    return out


def read_secrets(directory: Path) -> Secrets:
    """The passwords of a previous run in ``directory`` (None / absent where there were none)."""
    devices: dict[str, str] = {}
    table = directory / DEVICES_CSV
    if table.is_file():
        with table.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                if row.get("username") and row.get("password"):
                    devices[row["username"]] = row["password"]
    return Secrets(
        gateway=_env(directory / GATEWAY_ENV).get(GATEWAY_PASSWORD_VAR) or None,
        mes=_env(directory / MES_ENV).get(MES_PASSWORD_VAR) or None,
        devices=devices,
    )


def gateway_env(plan: BrokerPlan, password: str) -> str:
    users = ", ".join(i.username for i in plan.of("gateway")) or "none"
    return (
        f"# The gateway's broker login (site {plan.site}): each connection logs in as its\n"
        f"# client id with this password ({users}).\n"
        "# Keep this file readable by the gateway only.\n"
        f"{GATEWAY_FLAG_VAR}=true\n"
        f"{GATEWAY_PASSWORD_VAR}={password}\n"
    )


def mes_env(plan: BrokerPlan, password: str) -> str:
    (mes,) = plan.of("mes")
    return (
        f"# The MES's broker login (site {plan.site}). Keep it readable by the MES only.\n"
        f"{MES_SITE_VAR}={plan.site}\n"
        f"{MES_USERNAME_VAR}={mes.username}\n"
        f"{MES_PASSWORD_VAR}={password}\n"
    )


def devices_csv(devices: list[Identity], passwords: dict[str, str]) -> str:
    """One row per device: the login to enter in its MQTT settings and what it may use."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(DEVICE_COLUMNS)
    for device in sorted(devices, key=lambda d: d.username):
        writes = [g.topic for g in device.grants if g.access in ("write", "readwrite")]
        reads = [g.topic for g in device.grants if g.access in ("read", "readwrite")]
        writer.writerow(
            [
                device.username,
                passwords[device.username],
                device.role,
                " ".join(writes),
                " ".join(reads),
            ]
        )
    return buf.getvalue()
