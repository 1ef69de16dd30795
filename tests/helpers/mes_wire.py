"""What the tests of the MES wire share: a mill's part cycle as the gateway's samples, and a
plain MQTT client's look at the retained messages under a topic filter."""

from __future__ import annotations

import time

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from microfactory.gateway.sample import Sample

S = 1_000_000_000


def mill_cycle(t0: int, part: int, wh: float) -> list[Sample]:
    """The counters of mill-1 when its ``part``-th good part is done, 45 s apart, at ``wh``."""
    ts = t0 + part * 45 * S
    return [
        Sample("mill-1", "part_count", float(part), "count", ts),
        Sample("mill-1", "good_count", float(part), "count", ts),
        Sample("mill-1", "energy_active", wh, "Wh", ts),
    ]


def retained(url: str, topic_filter: str, count: int, timeout_s: float) -> dict[str, bytes]:
    """The retained messages under ``topic_filter`` by topic, once ``count`` are in (or at
    ``timeout_s``), read with a plain paho client of its own."""
    host, port = url.removeprefix("mqtt://").split(":")
    got: dict[str, bytes] = {}
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{time.time_ns()}")
    client.on_message = lambda _c, _u, msg: got.__setitem__(msg.topic, bytes(msg.payload))
    client.connect(host, int(port))
    client.subscribe(topic_filter, qos=1)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(got) < count:
        client.loop(0.1)
    client.disconnect()
    return got
