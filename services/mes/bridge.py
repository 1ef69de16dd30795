"""The MES on the wire: retained MachineContext out, QoS 1 machine events in.

A fixed client id and a persistent MQTT session (3.1.1 ``clean_session=False`` by default, or
v5 ``clean_start=False`` with a session expiry) let the broker queue events while the MES is
down. Messages are acknowledged by hand only after the database commit, so an event is never
acknowledged and then lost. The connection itself (URL, credentials, TLS, reconnects) is
:class:`microfactory.mqtt.client.MqttClient`'s.
"""

from __future__ import annotations

import logging
import threading

from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from microfactory import contract
from microfactory.mes.context import all_contexts
from microfactory.mes.ingest import ingest_event, parse_event
from microfactory.mes.settings import MesSettings
from microfactory.mqtt.client import Message, MqttClient, PublishStatus, Reconnect

log = logging.getLogger(__name__)


class BridgeError(Exception):
    """The MES has no usable broker settings."""


class MqttBridge:
    """Owns the MES's one MQTT connection; the client runs its network loop in its own thread."""

    def __init__(self, settings: MesSettings, sessions: sessionmaker[Session]) -> None:
        broker = settings.mqtt
        if broker is None:
            raise BridgeError("no mqtt_url configured")
        self._settings = settings
        self._sessions = sessions
        self._lock = threading.Lock()
        self.ingested = 0
        self.duplicates = 0
        self.rejected = 0
        self._client = MqttClient(
            broker,
            name="MES bridge",
            protocol=settings.mqtt_protocol,
            persistent=True,
            session_expiry_s=settings.mqtt_session_expiry_s,
            manual_ack=True,
            max_queued=10_000,
            reconnect=Reconnect.AUTO,
            on_connect=self._on_connect,
            on_message=self._on_message,
            logger=log,
        )

    # ----------------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Connect in the background; the client keeps reconnecting with capped backoff."""
        self._client.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._client.stop(timeout_s)

    def wait_connected(self, timeout_s: float = 10.0) -> bool:
        return self._client.wait_connected(timeout_s)

    def status(self) -> str:
        return "connected" if self._client.connected else "disconnected"

    # ----------------------------------------------------------------- publishing
    def publish_context(self, context: contract.MachineContext) -> None:
        """Retained, QoS 1; the client queues it while the broker is away."""
        topic = contract.context_topic(context.site, context.machine)
        sent = self._client.publish(topic, context.model_dump_json().encode(), qos=1, retain=True)
        if sent.status is PublishStatus.REFUSED:
            log.warning("context of %s not queued: %s", context.machine, sent.reason)
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

    # ----------------------------------------------------------------- callbacks (client thread)
    def _on_connect(self, _session_present: bool) -> None:
        self._client.subscribe([(contract.event_subscription(self._settings.site), 1)])
        try:
            self.republish_all()
        except SQLAlchemyError:
            log.exception("could not republish machine contexts")

    def _on_message(self, msg: Message) -> None:
        ack = msg.ack or (lambda: None)
        try:
            event = parse_event(msg.payload)
        except ValidationError as err:
            self.rejected += 1
            log.warning("rejected event on %s: %s", msg.topic, err.errors()[:1])
            ack()
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
        ack()
