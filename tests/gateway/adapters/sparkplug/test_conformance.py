"""The Sparkplug adapter passes the conformance kit against a real Mosquitto and Tahu node.

The counterpart is Mosquitto on a free port of 127.0.0.1 (restarted on the same port) and
Eclipse Tahu's JavaScript edge node publishing one aliased DDATA every 0.1 s; the node
reconnects and births again by itself after a restart. The bad payload is a DDATA that is not
protobuf.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from microfactory.gateway.adapters.sparkplug import plugin
from microfactory.gateway.testing import AdapterConformance, BadConfig
from tests.gateway.adapters.sparkplug.test_against_tahu_node import METER, publish_raw
from tests.helpers.servers import Mosquitto
from tests.helpers.sparkplug_node import SparkplugEdgeNode, SparkplugNodeError

pytestmark = pytest.mark.integration


class EdgeNodeOnBroker:
    """Mosquitto plus an edge node ``N`` with a device ``meter`` measuring ``press-1``."""

    def __init__(self, workdir: Path) -> None:
        self.broker = Mosquitto(workdir / "mosquitto")
        self.group = f"c{uuid.uuid4().hex[:8]}"
        self.node = SparkplugEdgeNode(
            workdir / "node",
            url=self.broker.url,
            group=self.group,
            node="N",
            devices={"meter": METER},
        )
        self._started = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def adapter_config(self, name: str) -> dict[str, Any]:
        return {
            "type": "sparkplug",
            "name": name,
            "broker": self.broker.url,
            "group_id": self.group,
            "edge_node": "N",
            "device": "meter",
            "machine": "press-1",
            "metrics": [{"name": "Power/Active", "signal": "power_active"}],
            "rebirth_interval_s": 0.5,
        }

    async def start(self) -> None:
        await asyncio.to_thread(self.broker.start)
        if not self._started:
            self._started = True
            self.node.start()
            await asyncio.to_thread(self.node.ready)
            self._thread = threading.Thread(target=self._publish, daemon=True)
            self._thread.start()

    def _publish(self) -> None:
        value = 0.0
        while not self._stop.wait(0.1):
            value += 0.5
            try:
                self.node.ddata("meter", [{"alias": 1, "type": "Double", "value": value}])
            except SparkplugNodeError:
                return

    async def stop(self) -> None:
        await asyncio.to_thread(self.broker.stop)

    async def send_bad_payload(self) -> None:
        topic = f"spBv1.0/{self.group}/DDATA/N/meter"
        await asyncio.to_thread(publish_raw, self.broker, topic, b"\x08\xff\xff not protobuf")

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.node.stop()
        self.broker.stop()


GOOD: dict[str, Any] = {
    "type": "sparkplug",
    "name": "spb",
    "broker": "mqtt://127.0.0.1:1883",
    "group_id": "Plant",
    "edge_node": "N",
    "machine": "press-1",
    "metrics": [{"name": "Power/Active", "signal": "power_active", "unit": "kW"}],
}
MAPPING = {"edge_node": "N", "machine": "press-1", "metrics": GOOD["metrics"]}
SINGLE = {k: v for k, v in GOOD.items() if k not in ("edge_node", "machine", "metrics")}


class TestSparkplugConformance(AdapterConformance):
    plugin = plugin
    machines = frozenset({"press-1"})
    bad_configs = (
        BadConfig({**GOOD, "broker": "http://broker:1883"}, "broker"),
        BadConfig({**GOOD, "group_id": "Plant/1"}, "group_id"),
        BadConfig({**GOOD, "metrics": [{**GOOD["metrics"][0], "unit": "bar"}]}, "metrics[0].unit"),
        BadConfig({**GOOD, "metrics": GOOD["metrics"] * 2}, "metrics", id="metric mapped twice"),
        BadConfig({**SINGLE, "devices": [{**MAPPING, "edge_node": "N+"}]}, "devices[0].edge_node"),
        BadConfig({**SINGLE, "devices": [{**MAPPING, "metrics": []}]}, "devices[0].metrics"),
        BadConfig({**GOOD, "rebirth_interval_s": 0}, "rebirth_interval_s"),
        BadConfig({**GOOD, "qos": 1}, "qos", id="unknown field"),
    )

    @pytest.fixture
    def counterpart(self, tmp_path: Path) -> Iterator[EdgeNodeOnBroker]:
        source = EdgeNodeOnBroker(tmp_path)
        yield source
        source.close()
