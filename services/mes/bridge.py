"""The MES on the wire: retained MachineContext out, QoS 1 machine events in.

A fixed client id and a persistent MQTT session (3.1.1 ``clean_session=False`` by default, or
v5 ``clean_start=False`` with a session expiry) let the broker queue events while the MES is
down. Messages are acknowledged by hand only after
the database commit, so an event is never acknowledged and then lost.
"""

from __future__ import annotations

import logging
import threading
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from microfactory import contract
from microfactory.mes.context import all_contexts
from microfactory.mes.ingest import ingest_event, parse_event
from microfactory.mes.settings import MesSettings

log = logging.getLogger(__name__)


class BridgeError(Exception):
    """The broker URL or connection is unusable."""


def parse_mqtt_url(url: str) -> tuple[str, int, str | None, str | None]:
    parsed = urlparse(url)
    if parsed.scheme not in ("mqtt", "tcp") or not parsed.hostname:
        raise BridgeError(f"mqtt_url {url!r}: expected mqtt://host[:port]")
    return parsed.hostname, parsed.port or 1883, parsed.username, parsed.password


class MqttBridge:
    """Owns the MES's one MQTT connection; runs paho's network loop in its own thread."""

    def __init__(
        self,
        settings: MesSettings,
        sessions: sessionmaker[Session],
        *,
        keepalive_s: int = 30,
    ) -> None:
        if not settings.mqtt_url:
            raise BridgeError("no mqtt_url configured")
        self._settings = settings
        self._sessions = sessions
        self._host, self._port, user, password = parse_mqtt_url(settings.mqtt_url)
        self._keepalive = keepalive_s
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self.ingested = 0
        self.duplicates = 0
        self.rejected = 0
        self._v5 = settings.mqtt_protocol == "5"
        self._client = (
            mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=settings.client_id,
                protocol=mqtt.MQTTv5,
                manual_ack=True,
            )
            if self._v5
            # MQTT 3.1.1 persistent session: what every broker (also the demo's amqtt) speaks
            else mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=settings.client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
                manual_ack=True,
            )
        )
        if user:
            self._client.username_pw_set(user, password)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.max_queued_messages_set(10_000)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect in the background; paho keeps reconnecting with capped backoff."""
        log.info(
            "MES bridge connecting to %s:%s as %s", self._host, self._port, self._settings.client_id
        )
        if self._v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self._settings.mqtt_session_expiry_s
            self._client.connect_async(
                self._host, self._port, self._keepalive, clean_start=False, properties=props
            )
        else:
            self._client.connect_async(self._host, self._port, self._keepalive)
        self._client.loop_start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        self._connected.clear()

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        return self._connected.wait(timeout_s)

    def status(self) -> str:
        return "connected" if self._connected.is_set() else "disconnected"

    # ----------------------------------------------------------------- publishing
    def publish_context(self, context: contract.MachineContext) -> None:
        """Retained, QoS 1; paho queues it while the broker is away."""
        topic = contract.context_topic(context.site, context.machine)
        info = self._client.publish(topic, context.model_dump_json().encode(), qos=1, retain=True)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("context of %s not queued: %s", context.machine, mqtt.error_string(info.rc))
        else:
            log.info(
                "context of %s published: order=%s batch=%s",
                context.machine,
                context.order,
                context.batch,
            )

    def republish_all(self) -> None:
        """After a (re)connect the database is the truth: put every machine's context out again."""
        with self._sessions() as session:
            contexts = all_contexts(session, self._settings.site)
        for ctx in contexts:
            self.publish_context(ctx)

    # ----------------------------------------------------------------- callbacks
    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.error("MES bridge connection refused: %s", reason)
            return
        client.subscribe(contract.event_subscription(self._settings.site), qos=1)
        self._connected.set()
        log.info("MES bridge connected to %s:%s", self._host, self._port)
        try:
            self.republish_all()
        except SQLAlchemyError:
            log.exception("could not republish machine contexts")

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._connected.clear()
        # a clean disconnect (our own stop) is news, not a warning
        level = logging.WARNING if reason.is_failure else logging.INFO
        log.log(level, "MES bridge disconnected: %s", reason)

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            event = parse_event(bytes(msg.payload))
        except ValidationError as err:
            self.rejected += 1
            log.warning("rejected event on %s: %s", msg.topic, err.errors()[:1])
            client.ack(msg.mid, msg.qos)
            return
        try:
            with self._lock, self._sessions() as session:
                result = ingest_event(session, event, self._settings.site)
                session.commit()
        except SQLAlchemyError:
            log.exception("event %s not stored; left unacknowledged for redelivery", event.event_id)
            return
        if result.duplicate:
            self.duplicates += 1
        elif result.rejected:
            self.rejected += 1
        else:
            self.ingested += 1
        log.debug("event %s on %s: %s", event.event_id, event.machine, result.outcome)
        client.ack(msg.mid, msg.qos)
