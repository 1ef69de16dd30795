"""The gateway's side of the MES wire: context in (retained MQTT), machine events out (QoS 1).

:class:`MesLink` is a sink: it reads the spool from its own cursor like any other sink, so a
broker outage only delays events (the samples wait on disk) and a crash replays them. Events
are derived by :class:`microfactory.gateway.events.EventDeriver`, published with QoS 1 on a persistent
MQTT session, and the spool cursor moves only once the broker has acknowledged every event
of a batch. The deriver's memory is saved next to the spool after each batch, so a restart
neither loses a part nor counts one twice (and the event ids make any replay harmless).

The same connection subscribes to the retained MachineContext topics and keeps
:attr:`MesLink.context` current; the pipeline tags every sample of a machine with it.
Anyone on an open broker can publish there, so a context counts only if it is within the size
cap, signed when ``signing_key`` is set, valid (bounded fields, no control characters), and
its topic, site and machine agree with the payload and with our site
(:func:`microfactory.contract.receive_context`). Anything else, an empty retained message
included, leaves the last good context in place, is counted in :attr:`MesLink.refused` and
logged once per topic and reason.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path

from microfactory import contract
from microfactory.mqtt.client import (
    Delivery,
    Message,
    MqttClient,
    PublishError,
    PublishStatus,
    Reconnect,
)
from microfactory.mqtt.settings import MqttSettings

from ...config import MesLinkSettings, SiteConfig
from ...errors import SinkError
from ...events import EventDeriver
from ...sample import Sample
from ..base import SinkContext
from . import MesLinkTarget

log = logging.getLogger(__name__)


class MesLink:
    """Sink ``mes_events`` plus the context subscriber; one per gateway, no shared state."""

    def __init__(self, target: MesLinkTarget, context: SinkContext) -> None:
        self.name = "mes_events"
        self.settings = target.settings
        self.batch_size = self.settings.batch_size
        self._mqtt: MqttSettings = target.broker
        self._site = context.site
        self.state_path: Path = self.settings.state_path or (
            context.state_dir / "mes-events-state.json"
        )
        self.deriver = EventDeriver(context.site, hold_s=self.settings.hold_s)
        self.context: dict[str, dict[str, str]] = {}
        self.published = 0
        self.contexts_received = 0
        self._key = self.settings.signing_key
        self._refusals = contract.RefusalLog(log, "MES link")
        self._subscribed = threading.Event()
        self._client: MqttClient | None = None

    @classmethod
    def from_site(cls, site: SiteConfig, settings: MesLinkSettings | None = None) -> MesLink:
        """The MES link a site config describes (``mes_link:`` and its ``mqtt:`` broker)."""
        target = MesLinkTarget(
            settings or site.mes_link or MesLinkSettings(), site.mqtt or MqttSettings()
        )
        context = SinkContext(site.site, site.spool.path.parent, log)
        return cls(target, context)

    # ------------------------------------------------------------------ lifecycle
    async def ensure_database(self) -> None:
        """Nothing to create: the broker keeps topics as they are used."""

    async def open(self) -> None:
        """Connect in the background; wait briefly so retained contexts tag the first samples."""
        self._load_state()
        client = MqttClient(
            self._mqtt,
            name="MES link",
            client_id=self.settings.client_id or f"{self._mqtt.client_id}-mes",
            # MQTT 3.1.1 persistent session: what every broker (also the demo's amqtt) speaks
            protocol=self.settings.protocol,
            persistent=True,
            session_expiry_s=self.settings.session_expiry_s,
            max_inflight=100,
            reconnect=Reconnect.AUTO,
            on_connect=self._on_connect,
            on_message=self._on_message,
            on_subscribe=self._on_subscribe,
            logger=log,
        )
        self._client = client
        client.start()
        await asyncio.to_thread(self._subscribed.wait, self.settings.connect_wait_s)
        if self._subscribed.is_set():
            await asyncio.sleep(0.2)  # retained messages follow the SUBACK at once

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.stop)
        self._subscribed.clear()

    # ------------------------------------------------------------------ sink
    async def write(self, samples: list[Sample]) -> None:
        """Derive and publish the events of a batch; raise (retryable) unless all are acked."""
        if not self.settings.events:
            return
        client = self._client
        if client is None or not client.connected:
            raise SinkError("MES link: not connected to the broker", retryable=True)
        saved = self.deriver.dump()
        events = self.deriver.feed(samples)
        try:
            sent = []
            for ev in events:
                topic = contract.event_topic(ev.site, ev.machine)
                body = ev.model_dump_json().encode()
                if self._key is not None:
                    body = contract.sign(self._key, topic, body)
                delivery = client.publish(topic, body, qos=1)
                if delivery.status is not PublishStatus.SENT:
                    raise SinkError(
                        f"MES link: publish refused ({delivery.reason})", retryable=True
                    )
                sent.append(delivery)
            if sent:
                await asyncio.to_thread(self._wait_acked, sent, self.settings.publish_timeout_s)
        except SinkError:
            # The same samples come again: derive them again from the same memory.
            self.deriver.load(saved)
            raise
        self.published += len(events)
        await asyncio.to_thread(self._save_state)

    @staticmethod
    def _wait_acked(sent: list[Delivery], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for delivery in sent:
            try:
                acked = delivery.wait(deadline - time.monotonic())
            except PublishError as err:
                raise SinkError(f"MES link: event not delivered ({err})", retryable=True) from err
            if not acked:
                raise SinkError(
                    f"MES link: broker did not acknowledge events within {timeout_s:g} s",
                    retryable=True,
                )

    @property
    def refused(self) -> dict[str, int]:
        """Contexts refused (and the last good one kept), by reason (``contract.RefusalReason``)."""
        return self._refusals.snapshot()

    def describe(self, sample: Sample) -> str:
        return f"{sample.machine} {sample.signal}={sample.value!r} @ {sample.ts_ns}"

    # ------------------------------------------------------------------ deriver memory
    def _load_state(self) -> None:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            log.warning(
                "MES link: cannot read %s (%s); counters start afresh", self.state_path, err
            )
            return
        if isinstance(data, dict) and data.get("site") == self._site:
            self.deriver.load(data.get("machines", {}))

    def _save_state(self) -> None:
        data = {"site": self._site, "machines": self.deriver.dump()}
        tmp = self.state_path.with_suffix(".tmp")
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data, separators=(",", ":")))
        os.replace(tmp, self.state_path)

    # ------------------------------------------------------------------ callbacks (client thread)
    def _on_connect(self, _session_present: bool) -> None:
        if self._client is not None:
            self._client.subscribe([(contract.context_subscription(self._site), 1)])

    def _on_subscribe(self, _mid: int, _granted: list[int]) -> None:
        self._subscribed.set()

    def _on_message(self, msg: Message) -> None:
        try:
            ctx = contract.receive_context(msg.topic, msg.payload, site=self._site, key=self._key)
        except contract.Refused as refusal:
            self._refusals.refuse(msg.topic, refusal)
            return
        self.contexts_received += 1
        tags = {k: v for k in contract.CONTEXT_TAGS if (v := getattr(ctx, k))}
        # a new dict each time: samples already tagged keep the context they were tagged with
        if tags:
            self.context[ctx.machine] = tags
        else:
            self.context.pop(ctx.machine, None)
        log.info("MES link: context of %s is %s", ctx.machine, tags or "empty")
