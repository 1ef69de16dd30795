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

A gateway and an MES configured with different site ids used to be silent: the MES subscribed
to its own site only and never saw a thing. The bridge also listens, at QoS 0 (the broker
queues nothing of other sites for us while we are down), to the events of every site: an
event of another site is stored nowhere, counted under ``other_site``, and the first one of
each foreign site logs one warning naming both ids and what to set. A broker whose ACL denies
that wildcard (the generated config does) simply sends nothing on it.
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

ALL_SITES_EVENTS = f"{contract.TOPIC_ROOT}/+/events/+"
"""Every site's events: a wrong site id on either side shows up as ``other_site`` refusals."""
MAX_FOREIGN_SITES = 64  # sites warned about: a spray of topics cannot grow memory or the log


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
        self._count_lock = threading.Lock()  # not _lock: a scrape must not wait for a commit
        self._other_site = 0  # counted here: logged once per site, not per topic (RefusalLog)
        self._foreign_sites: set[str] = set()
        # MQTT 5 brokers may deliver our own site's events once per matching subscription:
        # the copy from the wildcard follows the one just stored, byte for byte.
        self._last_stored: tuple[str, bytes] | None = None
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
        counts = self._refusals.snapshot()
        with self._count_lock:
            if self._other_site:
                counts["other_site"] = self._other_site
        return counts

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
        self._client.subscribe(
            [(contract.event_subscription(self._settings.site), 1), (ALL_SITES_EVENTS, 0)]
        )
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
            parts = contract.parse_topic(msg.topic)
            if refusal.reason == "site" and parts is not None and parts.site != self._settings.site:
                self._refuse_other_site(parts.site)
            else:
                self._refusals.refuse(msg.topic, refusal)
            ack()  # refused again on every redelivery: never leave it to the broker
            return
        if self._settings.mqtt_protocol == "5" and self._last_stored == (msg.topic, msg.payload):
            ack()  # the wildcard's copy of the event just stored
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
        self._last_stored = (msg.topic, msg.payload)
        ack()

    def _refuse_other_site(self, site: str) -> None:
        """Count an event of another site; warn once per site (the ids differ, or the broker
        carries several sites): the fix is one setting on one side."""
        site = site[:80]  # a topic level can be 64 KiB; %r below escapes control characters
        with self._count_lock:
            self._other_site += 1
            first = site not in self._foreign_sites and len(self._foreign_sites) < MAX_FOREIGN_SITES
            if first:
                self._foreign_sites.add(site)
        if first:
            log.warning(
                "MES bridge: events of site %r arrive, but this MES serves site %r: they are "
                "not stored. If they are this workshop's machines, give both the same site id: "
                "`site:` in the gateway's site.yaml or MICROFACTORY_MES__SITE in mes.env "
                '(further ones are counted in microfactory_mes_mqtt_refused_total{reason="other_site"})',
                site,
                self._settings.site,
            )
