"""The MQTT adapter on a broker that wants TLS and a login, through a broker outage.

The emitter is the conformance kit's: it also checks every call against the contract."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time
from pathlib import Path

import pytest

from microfactory.gateway.adapters.base import AdapterContext
from microfactory.gateway.adapters.mqtt.adapter import MqttAdapter
from microfactory.gateway.config import parse_site_config
from microfactory.gateway.testing.emitter import RecordingEmitter
from microfactory.mqtt.client import MqttClient, Reconnect
from tests.helpers.servers import Mosquitto, MosquittoTls
from tests.helpers.waiting import wait_for
from tests.mqtt.certs import BROKER_NAME, make_pki

pytestmark = pytest.mark.integration


def _passwd(path: Path) -> Path:
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(path), "gw", "pw"], check=True)
    return path


async def test_adapter_over_mqtts_with_login_reports_the_outage_as_a_gap(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    passwd = _passwd(tmp_path / "passwd")
    broker = Mosquitto(
        tmp_path / "mosquitto",
        anonymous=False,
        password_file=passwd,
        tls=MosquittoTls(pki.ca, pki.broker_cert, pki.broker_key),
    )
    broker.start()
    site = parse_site_config(
        {
            "machines": [{"id": "m1"}],
            "mqtt": {
                "url": broker.tls_url,
                "username": "gw",
                "password": "pw",
                "tls": {"ca_file": str(pki.ca), "server_name": BROKER_NAME},
            },
            "adapters": [
                {
                    "type": "mqtt",
                    "name": "mqtt-tls",
                    "subscriptions": [{"topic": "t/m1/{signal}", "machine": "m1", "value": {}}],
                }
            ],
        },
        "tls test",
    )
    emitter = RecordingEmitter("mqtt-tls", {"m1"})
    context = AdapterContext(
        site=site.site,
        machines=frozenset({"m1"}),
        emitter=emitter,
        logger=logging.getLogger("test.mqtt-tls"),
        state_dir=tmp_path,
    )
    adapter = MqttAdapter(site.adapters[0], context)  # type: ignore[arg-type]
    assert site.mqtt is not None
    publisher = MqttClient(
        site.mqtt.model_copy(update={"client_id": "tls-test-publisher"}),
        name="publisher",
        reconnect=Reconnect.AUTO,
    )
    publisher.start()
    await adapter.start()
    try:
        await wait_for(lambda: adapter.supervisor.state == "connected", 10, "adapter connected")
        assert publisher.wait_connected(5)
        payload = b'{"value": 21.5, "unit": "W", "ts": %d}' % time.time_ns()
        publisher.publish("t/m1/power_active", payload, qos=1).wait(5)
        await wait_for(lambda: emitter.samples, 10, "the first sample")
        assert emitter.samples[0].value == 21.5

        await asyncio.to_thread(broker.stop)
        await wait_for(lambda: "disconnected" in emitter.states, 10, "the outage noticed")
        await asyncio.to_thread(broker.start)
        await wait_for(lambda: emitter.gaps, 20, "the gap after the reconnect")
        assert emitter.gaps[0].machine == "m1"
        assert emitter.states[:3] == ["connecting", "connected", "disconnected"]
        assert emitter.states[-1] == "connected"
    finally:
        publisher.stop(2)
        started = time.monotonic()
        await adapter.stop(3)
        assert time.monotonic() - started < 3.5
        broker.stop()
    assert emitter.states.count("stopped") == 1 and emitter.states[-1:] == ["stopped"]
    assert not emitter.dead_letters
    assert not emitter.violations, emitter.violations
