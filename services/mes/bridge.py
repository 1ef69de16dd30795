"""The MES on the wire: retained MachineContext out, QoS 1 machine events in.

A fixed client id and a persistent MQTT session (3.1.1 ``clean_session=False`` by default, or
v5 ``clean_start=False`` with a session expiry) let the broker queue events while the MES is
down. Messages are acknowledged by hand only after the database commit, so an event is never
acknowledged and then lost. The connection itself (URL, credentials, TLS, reconnects) is
:class:`microfactory.mqtt.client.MqttClient`'s.

Anyone who can publish on the broker can send us "events": an event is stored only if it is
within the size cap, signed when ``mqtt_signing_key`` is set, valid, and its topic, site and
machine agree with the payload and with our site (:func:`microfactory.contract.receive_event`).
A refused message is acknowledged (a redelivery would be refused again, forever), not
stored, counted by reason in :attr:`MqttBridge.refused`, and logged once per topic and reason.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from microfactory import contract
from microfactory.mes.context import all_contexts
from microfactory.mes.ingest import ingest_event
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
        self.rejected = 0  # stored in the event log as rejected (a gap ending before it starts)
        self._key = settings.mqtt_signing_key
        self._refusals = contract.RefusalLog(log, "MES bridge")
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

    @property
    def refused(self) -> dict[str, int]:
        """Messages refused before storage, by reason (``contract.RefusalReason``)."""
        return self._refusals.snapshot()

    # ----------------------------------------------------------------- publishing
    def publish_context(self, context: contract.MachineContext) -> None:
        """Retained, QoS 1, signed when a key is set; the client queues it while the broker is away.

        Never an empty retained message: a context without ``order`` says "no batch", and the
        gateway ignores empty ones (anyone on the broker could send them).
        """
        topic = contract.context_topic(context.site, context.machine)
        body = context.model_dump_json().encode()
        if self._key is not None:
            body = contract.sign(self._key, topic, body)
        sent = self._client.publish(topic, body, qos=1, retain=True)
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
            event = contract.receive_event(
                msg.topic, msg.payload, site=self._settings.site, key=self._key
            )
        except contract.Refused as refusal:
            self._refusals.refuse(msg.topic, refusal)
            ack()  # refused again on every redelivery: never leave it to the broker
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
