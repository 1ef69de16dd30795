"""The gateway's side of the MES wire: context in (retained MQTT), machine events out (QoS 1).

:class:`MesLink` is a sink: it reads the spool from its own cursor like any other sink, so a
broker outage only delays events (the samples wait on disk) and a crash replays them. Events
are derived by :class:`microfactory.gateway.events.EventDeriver`, published with QoS 1 on a persistent
MQTT session, and the spool cursor moves only once the broker has acknowledged every event
of a batch. The deriver's memory is saved next to the spool after each batch, so a restart
neither loses a part nor counts one twice (and the event ids make any replay harmless).

The same connection subscribes to the retained MachineContext topics and keeps
:attr:`MesLink.context` current; the pipeline tags every sample of a machine with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from microfactory import contract
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
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._client: mqtt.Client | None = None

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
        parts = urlsplit(self._mqtt.url)
        client_id = self.settings.client_id or f"{self._mqtt.client_id}-mes"
        v5 = self.settings.protocol == "5"
        client = (
            mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
            if v5
            # MQTT 3.1.1 persistent session: what every broker (also the demo's amqtt) speaks
            else mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=client_id,
                protocol=mqtt.MQTTv311,
                clean_session=False,
            )
        )
        if self._mqtt.username:
            client.username_pw_set(self._mqtt.username, self._mqtt.password)
        if parts.scheme == "mqtts":
            client.tls_set()
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_inflight_messages_set(100)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        default_port = 8883 if parts.scheme == "mqtts" else 1883
        host, port = parts.hostname or "127.0.0.1", parts.port or default_port
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = self.settings.session_expiry_s
            client.connect_async(
                host, port, self._mqtt.keepalive_s, clean_start=False, properties=props
            )
        else:
            client.connect_async(host, port, self._mqtt.keepalive_s)
        client.loop_start()
        self._client = client
        await asyncio.to_thread(self._subscribed.wait, self.settings.connect_wait_s)
        if self._subscribed.is_set():
            await asyncio.sleep(0.2)  # retained messages follow the SUBACK at once

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        self._connected.clear()
        self._subscribed.clear()

    # ------------------------------------------------------------------ sink
    async def write(self, samples: list[Sample]) -> None:
        """Derive and publish the events of a batch; raise (retryable) unless all are acked."""
        if not self.settings.events:
            return
        client = self._client
        if client is None or not self._connected.is_set():
            raise SinkError("MES link: not connected to the broker", retryable=True)
        saved = self.deriver.dump()
        events = self.deriver.feed(samples)
        try:
            infos = []
            for ev in events:
                topic = contract.event_topic(ev.site, ev.machine)
                info = client.publish(topic, ev.model_dump_json().encode(), qos=1)
                if info.rc != mqtt.MQTT_ERR_SUCCESS:
                    raise SinkError(
                        f"MES link: publish refused ({mqtt.error_string(info.rc)})", retryable=True
                    )
                infos.append(info)
            if infos:
                await asyncio.to_thread(self._wait_acked, infos, self.settings.publish_timeout_s)
        except SinkError:
            # The same samples come again: derive them again from the same memory.
            self.deriver.load(saved)
            raise
        self.published += len(events)
        await asyncio.to_thread(self._save_state)

    @staticmethod
    def _wait_acked(infos: list[mqtt.MQTTMessageInfo], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        for info in infos:
            left = deadline - time.monotonic()
            try:
                info.wait_for_publish(max(0.0, left))
            except (RuntimeError, ValueError) as err:
                raise SinkError(f"MES link: event not delivered ({err})", retryable=True) from err
            if not info.is_published():
                raise SinkError(
                    f"MES link: broker did not acknowledge events within {timeout_s:g} s",
                    retryable=True,
                )

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

    # ------------------------------------------------------------------ callbacks (paho thread)
    def _on_connect(
        self,
        client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if reason.is_failure:
            log.warning("MES link: broker refused the connection: %s", reason)
            return
        self._connected.set()
        client.subscribe(contract.context_subscription(self._site), qos=1)
        log.info("MES link connected to %s", self._mqtt.url)

    def _on_disconnect(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _flags: mqtt.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if self._connected.is_set():
            level = logging.WARNING if reason.is_failure else logging.INFO  # clean: our stop
            log.log(level, "MES link disconnected: %s", reason)
        self._connected.clear()

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        _mid: int,
        _reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        machine = msg.topic.rsplit("/", 1)[-1]
        if not msg.payload:
            self.context.pop(machine, None)
            return
        try:
            ctx = contract.MachineContext.model_validate_json(bytes(msg.payload))
        except ValidationError as err:
            log.warning("MES link: bad context on %s: %s", msg.topic, err.errors()[:1])
            return
        self.contexts_received += 1
        tags = {k: v for k in contract.CONTEXT_TAGS if (v := getattr(ctx, k))}
        # a new dict each time: samples already tagged keep the context they were tagged with
        if tags:
            self.context[ctx.machine] = tags
        else:
            self.context.pop(ctx.machine, None)
        log.info("MES link: context of %s is %s", ctx.machine, tags or "empty")
