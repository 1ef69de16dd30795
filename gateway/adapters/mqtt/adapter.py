"""The MQTT adapter: one paho client, many subscriptions, QoS 1 acknowledged after the spool.

paho runs its own network thread; every callback here hands work to the gateway's emitter,
which is thread-safe. The PUBACK of a QoS 1 message is sent only once its samples are
durable (paho ``manual_ack``), and with a persistent session the broker keeps what arrives
while the gateway is away.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ...errors import PayloadError
from ..base import AdapterContext
from .config import MqttAdapterConfig
from .payload import CompiledSubscription, decode

log = logging.getLogger(__name__)
# What a {machine} or {signal} topic level may hold: it becomes an InfluxDB tag.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")


class MqttAdapter:
    def __init__(self, config: MqttAdapterConfig, context: AdapterContext) -> None:
        self.config = config
        self._emitter = context.emitter
        mqtt_settings = config.site_broker
        url = config.broker or mqtt_settings.url
        parts = urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._tls = parts.scheme == "mqtts"
        self._port = parts.port or (8883 if self._tls else 1883)
        base_id = mqtt_settings.client_id
        self._client_id = config.client_id or f"{base_id}-{config.name}"
        self._subs = [CompiledSubscription(s) for s in config.subscriptions]
        self._known_machines = context.machines
        self._client: mqtt.Client | None = None
        self._stopping = False
        self._down_since_ns: int | None = None
        # Acks are only valid on the connection that received the message: after a reconnect
        # the broker redelivers what was not acknowledged, under packet ids it may reuse.
        self._generation = 0
        self._lock = threading.Lock()
        self.messages = 0
        self.stale_acks = 0

    async def start(self) -> None:
        v5 = self.config.protocol == "5"
        if v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self._client_id,
                clean_session=not self.config.persistent_session,
                protocol=mqtt.MQTTv311,
                manual_ack=True,
            )
        settings = self.config.site_broker
        if settings.username and not self.config.broker:
            client.username_pw_set(settings.username, settings.password)
        if self._tls:
            client.tls_set()
        # The broker holds up to its queue limit for us; we keep 1000 unacked in flight.
        client.max_inflight_messages_set(1000)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._client = client
        self._emitter.connection(self.config.name, "connecting")
        keepalive = self.config.site_broker.keepalive_s
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.ReceiveMaximum = self.config.receive_maximum
            props.SessionExpiryInterval = (
                self.config.session_expiry_s if self.config.persistent_session else 0
            )
            client.connect_async(
                self._host,
                self._port,
                keepalive=keepalive,
                clean_start=not self.config.persistent_session,
                properties=props,
            )
        else:
            client.connect_async(self._host, self._port, keepalive=keepalive)
        client.loop_start()

    async def stop(self, timeout_s: float) -> None:
        client = self._client
        if client is None:
            return
        self._stopping = True
        client.disconnect()
        try:
            await asyncio.wait_for(asyncio.to_thread(client.loop_stop), timeout_s)
        except TimeoutError:
            log.warning(
                "mqtt adapter %s: network thread did not stop in %.1fs", self.config.name, timeout_s
            )
        self._emitter.connection(self.config.name, "stopped")

    # ------------------------------------------------------------ paho callbacks (its thread)
    def _on_connect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt adapter %s: broker refused connection: %s", self.config.name, reason)
            return
        with self._lock:
            self._generation += 1
        log.info(
            "mqtt adapter %s: connected to %s:%d (session present: %s)",
            self.config.name,
            self._host,
            self._port,
            getattr(flags, "session_present", None),
        )
        client.subscribe([(s.sub.filter, int(s.sub.qos)) for s in self._subs])
        self._emitter.connection(self.config.name, "connected")
        if self._down_since_ns is not None:
            now = time.time_ns()
            for machine in sorted(self.config.machines_referenced()):
                self._emitter.gap(machine, self._down_since_ns, now, "mqtt broker connection lost")
            self._down_since_ns = None

    def _on_disconnect(
        self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        if self._stopping:  # our own disconnect: nothing to warn about, no gap to report
            log.info("mqtt adapter %s: disconnected", self.config.name)
            return
        if self._down_since_ns is None:
            self._down_since_ns = time.time_ns()
        log.warning("mqtt adapter %s: disconnected (%s)", self.config.name, reason)
        self._emitter.connection(self.config.name, "disconnected")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        ack: Callable[[], None] | None = None
        if msg.qos:
            mid, qos = msg.mid, msg.qos
            generation = self._generation

            def ack() -> None:
                with self._lock:
                    if generation != self._generation:
                        # the broker redelivers this one on the new connection
                        self.stale_acks += 1
                        return
                client.ack(mid, qos)

        # msg.topic raises on a topic that is not UTF-8; such a message is dead-lettered
        topic = bytes(msg._topic).decode("utf-8", "replace")
        try:
            self._handle(topic, bytes(msg.payload), ack)
        except Exception as err:  # top-level guard: a bad message must never kill the thread
            log.exception("mqtt adapter %s: unexpected error on %s", self.config.name, topic)
            self._emitter.dead_letter(
                self.config.name, topic, f"internal error: {err!r}", bytes(msg.payload), ack
            )

    def _handle(self, topic: str, payload: bytes, ack: Any) -> None:
        self.messages += 1
        receive_ns = time.time_ns()
        reason: str | None = None
        if len(payload) > self.config.max_payload_bytes:
            reason = f"payload of {len(payload)} bytes exceeds max_payload_bytes={self.config.max_payload_bytes}"
        else:
            for compiled in self._subs:
                captured = compiled.match(topic)
                if captured is None:
                    continue
                machine = captured.get("machine")
                if machine is not None and machine not in self._known_machines:
                    reason = f"machine {machine[:80]!r} from the topic is not declared in the site config"
                    break
                signal = captured.get("signal")
                if signal is not None and not _NAME.match(signal):
                    reason = (
                        f"signal {signal[:80]!r} from the topic is not a valid signal name "
                        "(1-64 letters, digits, '_', '.', ':' or '-')"
                    )
                    break
                try:
                    samples = decode(compiled, captured, topic, payload, receive_ns)
                except PayloadError as err:
                    reason = str(err)
                    break
                self._emitter.submit(samples, ack)
                return
            else:
                reason = "no subscription of this adapter matches the topic"
        self._emitter.dead_letter(self.config.name, topic, reason, bytes(payload), ack)
