"""Run inside the installed root (its venv's Python): start what systemd would, check it works.

The test copies this file into a fresh Debian root after ``deploy/install.sh`` ran there and
runs it in a network namespace of its own (so the fixed default ports collide with nothing).
There is no systemd in a chroot: the services are started by hand, each exactly as its
installed unit says (``ExecStart=``, ``User=``, ``EnvironmentFile=``, ``WorkingDirectory=``).
Prints one JSON object with what it found; the test asserts on it.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

UNITS = Path("/etc/systemd/system")
BROKER = Path("/etc/mosquitto/microfactory")


def wait_port(port: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.2)
    return False


def read_env(path: Path) -> dict[str, str]:
    env = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() and not key.startswith("#"):
            env[key.strip()] = value.strip()
    return env


def start_unit(name: str, log: Path) -> subprocess.Popen[bytes]:
    """Start ``name`` the way its unit file says, without systemd."""
    fields: dict[str, list[str]] = {}
    for line in (UNITS / name).read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.startswith("#"):
            fields.setdefault(key.strip(), []).append(value.strip())
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
    for item in fields.get("EnvironmentFile", []):
        path = Path(item.lstrip("-"))
        if path.exists():
            env.update(read_env(path))
    user = pwd.getpwnam(fields["User"][0])
    workdir = fields.get("WorkingDirectory", ["/"])[0]
    return subprocess.Popen(
        fields["ExecStart"][-1].split(),
        env=env,
        cwd=workdir,
        user=user.pw_uid,
        group=user.pw_gid,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def http(url: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> Any:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def mqtt_connect(username: str | None, password: str | None) -> int:
    """The CONNACK reason (0: accepted) of a login to the local broker."""
    result: list[int] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=username or "anon-probe")
    if username is not None:
        client.username_pw_set(username, password)
    client.on_connect = lambda c, u, f, rc, p: result.append(rc.value)
    client.connect("127.0.0.1", 1883)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not result and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    return result[0] if result else -1


def main() -> None:
    logs = Path("/var/log/microfactory-test")
    logs.mkdir(exist_ok=True)
    found: dict[str, Any] = {}
    procs = []
    influx = subprocess.Popen(
        ["runuser", "-u", "influxdb", "--", "influxd", "-config", "/etc/influxdb/influxdb.conf"],
        stdout=(logs / "influxd.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    procs.append(influx)
    broker = subprocess.Popen(
        ["/usr/sbin/mosquitto", "-c", str(BROKER / "mosquitto.conf")],
        stdout=(logs / "mosquitto.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    procs.append(broker)
    try:
        found["influxdb_up"] = wait_port(8086, 30)
        found["broker_up"] = wait_port(1883, 15)
        procs.append(start_unit("microfactory-gateway.service", logs / "gateway.log"))
        procs.append(start_unit("microfactory-mes.service", logs / "mes.log"))
        found["gateway_health_up"] = wait_port(9108, 30)
        found["mes_up"] = wait_port(8081, 60)
        found["anonymous_connack"] = mqtt_connect(None, None)
        devices = (BROKER / "devices.csv").read_text().splitlines()[1:]
        machine_user, machine_password = devices[0].split(",")[:2]
        found["machine_connack"] = mqtt_connect(machine_user, "wrong password")
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=machine_user)
        client.username_pw_set(machine_user, machine_password)
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        info = client.publish(
            "plant/meter-1/power", json.dumps({"value": 4321.5, "unit": "W"}), qos=1
        )
        info.wait_for_publish(10)
        found["machine_published"] = info.is_published()
        client.loop_stop()
        client.disconnect()
        query = urllib.parse.urlencode(
            {"db": "microfactory", "q": "SELECT * FROM /.*/ WHERE time > now() - 1h"}
        )
        found["influx_has_sample"] = False
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not found["influx_has_sample"]:
            _, text = http(f"http://127.0.0.1:8086/query?{query}")
            found["influx_has_sample"] = "4321.5" in text
            time.sleep(0.5)
        found["healthz"] = http("http://127.0.0.1:9108/healthz")
        deadline = time.monotonic() + 20  # the MES's broker session may still be starting
        while True:
            found["mes_health"] = http("http://127.0.0.1:8081/api/v1/health")
            if '"mqtt":"connected"' in found["mes_health"][1] or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        password = Path("/etc/microfactory/admin-password").read_text().strip()
        body = json.dumps({"username": "admin", "password": password}).encode()
        status, text = http(
            "http://127.0.0.1:8081/api/v1/auth/token", body, {"Content-Type": "application/json"}
        )
        found["admin_login"] = status
        found["gateway_running"] = procs[2].poll() is None
        found["mes_running"] = procs[3].poll() is None
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        found["logs"] = {p.name: p.read_text()[-3000:] for p in sorted(logs.glob("*.log"))}
    json.dump(found, sys.stdout)


if __name__ == "__main__":
    os.umask(0o022)
    main()
