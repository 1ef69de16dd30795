"""The MQTT adapter passes the conformance kit against a real Mosquitto.

The counterpart is Mosquitto on a free port of 127.0.0.1 (restarted on the same port) and a
machine publishing one JSON reading every 0.1 s; the bad payload is a message that is not
JSON.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from microfactory.gateway.adapters.mqtt import plugin
from microfactory.gateway.testing import AdapterConformance, BadConfig
from tests.helpers.servers import Mosquitto

pytestmark = pytest.mark.integration


class PublishingBroker:
    """Mosquitto plus a machine ``press-1`` publishing ``{"power": .., "ts": ..}``."""

    def __init__(self, workdir: Path) -> None:
        self.broker = Mosquitto(workdir)
        self.topic = f"conf{uuid.uuid4().hex[:8]}/press-1/telemetry"
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def adapter_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "mqtt",
            "name": name,
            "broker": self.broker.url,
            "subscriptions": [
                {
                    "topic": self.topic,
                    "machine": "press-1",
                    "timestamp": {"path": "ts", "format": "epoch_ms"},
                    "fields": [{"path": "power", "signal": "power_active", "unit": "kW"}],
                }
            ],
        }

    async def start(self) -> None:
        await asyncio.to_thread(self.broker.start)
        if self._client is None:
            host, port = self.broker.url.removeprefix("mqtt://").split(":")
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{self.topic}")
            client.reconnect_delay_set(min_delay=1, max_delay=1)
            client.connect_async(host, int(port), keepalive=10)
            client.loop_start()
            self._client = client
            self._thread = threading.Thread(target=self._publish, daemon=True)
            self._thread.start()

    def _publish(self) -> None:
        while not self._stop.wait(0.1):
            client = self._client
            if client is not None and client.is_connected():
                doc = {"power": 1.5, "ts": time.time_ns() // 1_000_000}
                client.publish(self.topic, json.dumps(doc), qos=1)

    async def stop(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    async def send_bad_payload(self) -> None:
        assert self._client is not None
        self._client.publish(self.topic, b"\xff{not json", qos=1)

    def close(self) -> None:
        self._stop.set()
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()
        self.broker.stop()


GOOD_CONFIG: dict[str, Any] = {
    "type": "mqtt",
    "name": "press",
    "broker": "mqtt://127.0.0.1:1883",
    "subscriptions": [
        {
            "topic": "plant/press-1/telemetry",
            "machine": "press-1",
            "fields": [{"path": "power", "signal": "power_active", "unit": "kW"}],
        }
    ],
}
SUB = GOOD_CONFIG["subscriptions"][0]


class TestMqttConformance(AdapterConformance):
    plugin = plugin
    machines = frozenset({"press-1"})
    bad_configs = (
        BadConfig({**GOOD_CONFIG, "broker": "http://broker:1883"}, "broker"),
        BadConfig({**GOOD_CONFIG, "subscriptions": []}, "subscriptions"),
        BadConfig(
            {**GOOD_CONFIG, "subscriptions": [{**SUB, "topic": "plant/#/x"}]},
            "subscriptions[0].topic",
        ),
        BadConfig({**GOOD_CONFIG, "subscriptions": [{**SUB, "qos": 3}]}, "subscriptions[0].qos"),
        BadConfig(
            {
                **GOOD_CONFIG,
                "subscriptions": [{**SUB, "fields": [{**SUB["fields"][0], "unit": "bar"}]}],
            },
            "subscriptions[0].fields[0].unit",
        ),
        BadConfig({**GOOD_CONFIG, "qos": 1}, "qos", id="unknown field"),
    )

    @pytest.fixture
    def counterpart(self, tmp_path: Path) -> Iterator[PublishingBroker]:
        source = PublishingBroker(tmp_path / "mosquitto")
        yield source
        source.close()
