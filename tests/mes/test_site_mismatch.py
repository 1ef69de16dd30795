"""A gateway and an MES with different site ids say so (issue 14).

Following the old docs gave the gateway ``site: acme-north`` and the MES
``MICROFACTORY_MES__SITE=workshop``: the MES subscribed to its own site only and ignored every
event without a word. Here a real Mosquitto (open, as on a first install) and the real
``microfactory mes serve`` in its own process, its log in a file: events of ``acme-north``
store nothing, are counted under ``other_site`` in the metrics, and give exactly one warning
naming both ids and what to set; the events of ``workshop`` are still stored. Every wait is for
a figure the MES moves, never a sleep.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from sqlalchemy import func, select

from microfactory import contract
from microfactory.cli.ports import free_port
from microfactory.mes import db
from microfactory.mes.bridge import MqttBridge
from microfactory.mes.models import EventRecord, Part
from microfactory.mes.seed import seed_demo
from microfactory.mes.settings import MesSettings
from tests.helpers.servers import Mosquitto
from tests.helpers.waiting import wait_for_sync

pytestmark = pytest.mark.integration

S = 1_000_000_000
T0 = 1_767_000_000 * S
OTHER_EVENTS = 30


@dataclass
class MesProcess:
    proc: subprocess.Popen[bytes]
    url: str
    db_url: str
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def mes(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[MesProcess]:
    """``microfactory mes serve`` for site ``workshop`` (set as mes.env does), demo machines."""
    db_url = f"sqlite:///{tmp_path / 'mes.sqlite'}"
    engine = db.make_engine(db_url)
    db.migrate(engine)
    with db.session_scope(db.session_factory(engine)) as session:
        seed_demo(session, users=False)
    engine.dispose()
    port = free_port()
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "MICROFACTORY_MES__SITE": "workshop",
        "MICROFACTORY_MES__MQTT_URL": mosquitto.url,
        "MICROFACTORY_MES__SECRET_KEY": "s" * 40,
        "MICROFACTORY_MES__STATE_DIR": str(tmp_path / "state"),
    }
    cmd = [sys.executable, "-m", "microfactory", "mes", "serve", "--port", str(port)]
    cmd += ["--db-url", db_url, "--log-level", "info"]
    log = tmp_path / "mes.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = MesProcess(proc, f"http://127.0.0.1:{port}", db_url, log)
    try:
        wait_for_sync(lambda: _mqtt_connected(server), 60, "MES up and connected to the broker")
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _mqtt_connected(mes: MesProcess) -> bool:
    if mes.proc.poll() is not None:
        raise AssertionError(f"MES exited {mes.proc.returncode}:\n{mes.text()}")
    try:
        r = httpx.get(f"{mes.url}/api/v1/health", timeout=2)
    except httpx.TransportError:
        return False
    return r.status_code == 200 and r.json()["mqtt"] == "connected"


def _subscribed(mes: MesProcess, url: str) -> int:
    """Once the broker has the MES's subscriptions (sent after CONNACK, in one SUBSCRIBE):
    events of a throwaway site until one is counted. Returns the count to start from."""
    for n in range(200):
        _publish(url, "probe-site", 1, first=n)
        try:
            wait_for_sync(lambda: _refused(mes).get("other_site", 0) > 0, 0.5, "probe")
        except AssertionError:
            continue
        return _refused(mes)["other_site"]
    raise AssertionError("the MES never received an event of another site")


def _refused(mes: MesProcess) -> dict[str, int]:
    text = httpx.get(f"{mes.url}/api/v1/metrics", timeout=5).text
    pattern = r'^microfactory_mes_mqtt_refused_total\{reason="([a-z_]+)"\} (\d+)'
    return {m[1]: int(m[2]) for m in re.finditer(pattern, text, re.MULTILINE)}


def _counts(mes: MesProcess) -> tuple[int, int]:
    """(parts, event log rows) in the MES's database."""
    engine = db.make_engine(mes.db_url)
    try:
        with db.session_scope(db.session_factory(engine)) as session:
            parts = session.scalar(select(func.count()).select_from(Part)) or 0
            events = session.scalar(select(func.count()).select_from(EventRecord)) or 0
    finally:
        engine.dispose()
    return parts, events


def _publish(url: str, site: str, count: int, first: int = 1) -> None:
    """``count`` parts of mill-1 as the gateway of ``site`` sends them (QoS 1, acknowledged)."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"gateway-{site}")
    client.connect(host, int(port))
    client.loop_start()
    try:
        for n in range(first, first + count):
            event = contract.PartCompleted(
                event_id=f"{site}-mill-1-part-{n}",
                site=site,
                machine="mill-1",
                ts_ns=T0 + n * 45 * S,
                part_count=n,
                good=True,
                energy_wh=12.5,
            )
            topic = contract.event_topic(site, "mill-1")
            info = client.publish(topic, event.model_dump_json().encode(), qos=1)
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        client.loop_stop()
        client.disconnect()


def _site_warnings(log: str, site: str) -> list[str]:
    return [
        line for line in log.splitlines() if "this MES serves site" in line and f"'{site}'" in line
    ]


def test_events_of_another_site_are_refused_loudly_once(
    mes: MesProcess, mosquitto: Mosquitto
) -> None:
    base = _subscribed(mes, mosquitto.url)
    _publish(mosquitto.url, "acme-north", OTHER_EVENTS)
    wait_for_sync(
        lambda: _refused(mes).get("other_site", 0) == base + OTHER_EVENTS,
        20,
        f"{OTHER_EVENTS} events refused as other_site",
    )
    assert _counts(mes) == (0, 0)
    warnings = _site_warnings(mes.text(), "acme-north")
    assert len(warnings) == 1, mes.text()
    (line,) = warnings
    assert "WARNING" in line
    assert "'acme-north'" in line and "'workshop'" in line
    assert "site.yaml" in line and "MICROFACTORY_MES__SITE" in line
    # Nothing else about those events: no per-topic refusal line beside the site warning.
    assert "refused a message" not in mes.text()

    # A second burst, and the events of the right site: stored, no new warning.
    _publish(mosquitto.url, "acme-north", 5, first=OTHER_EVENTS + 1)
    _publish(mosquitto.url, "workshop", 3)
    wait_for_sync(lambda: _counts(mes)[0] == 3, 20, "3 workshop parts stored")
    wait_for_sync(
        lambda: _refused(mes).get("other_site", 0) == base + OTHER_EVENTS + 5,
        20,
        "the second burst counted",
    )
    assert _counts(mes) == (3, 3)
    assert set(_refused(mes)) == {"other_site"}
    assert len(_site_warnings(mes.text(), "acme-north")) == 1


def test_each_foreign_site_is_named_once(mes: MesProcess, mosquitto: Mosquitto) -> None:
    """Two wrong ids on one broker: two warnings, one per site, however many events."""
    base = _subscribed(mes, mosquitto.url)
    for _ in range(2):
        _publish(mosquitto.url, "acme-north", 4)
        _publish(mosquitto.url, "acme-south", 4, first=100)
    # The replays are refused before the event id is looked at: counted each time.
    wait_for_sync(lambda: _refused(mes).get("other_site", 0) == base + 16, 20, "16 refused")
    assert len(_site_warnings(mes.text(), "acme-north")) == 1, mes.text()
    assert len(_site_warnings(mes.text(), "acme-south")) == 1, mes.text()
    assert _counts(mes) == (0, 0)


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_own_events_are_stored_once_under_both_subscriptions(
    mosquitto: Mosquitto, tmp_path: Path, protocol: Literal["3.1.1", "5"]
) -> None:
    """Our site's events match both filters; an MQTT 5 Mosquitto sends one copy per
    subscription. Each event is stored once and none is counted as a duplicate."""
    settings = MesSettings(
        db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}",
        mqtt_url=mosquitto.url,
        site="workshop",
        mqtt_protocol=protocol,
        mqtt_client_id=f"mes-{protocol}",
    )
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    sessions = db.session_factory(engine)
    with db.session_scope(sessions) as session:
        seed_demo(session, users=False)
    bridge = MqttBridge(settings, sessions)
    bridge.start()
    try:
        assert bridge.wait_connected(10)
        for n in range(200):  # until the SUBSCRIBE is in: a throwaway site's event is counted
            _publish(mosquitto.url, "probe-site", 1, first=n)
            if bridge.refused.get("other_site"):
                break
            time.sleep(0.05)
        _publish(mosquitto.url, "workshop", 5)
        _publish(mosquitto.url, "acme-north", 2)
        wait_for_sync(lambda: bridge.ingested == 5, 20, "5 events stored")
        wait_for_sync(
            lambda: bridge.refused["other_site"] >= 3, 20, "the other site's events counted"
        )
        assert bridge.duplicates == 0
        assert bridge.rejected == 0
        assert set(bridge.refused) == {"other_site"}
    finally:
        bridge.stop()
        engine.dispose()
