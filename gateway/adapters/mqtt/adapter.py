"""The MQTT adapter: one broker session at a time, many subscriptions, QoS 1 acked after the spool.

The connection is :class:`microfactory.mqtt.client.MqttClient` in single-session mode, and
:class:`~microfactory.gateway.supervisor.ConnectionSupervisor` owns the rest: reconnect with
backoff, the connection states, and one gap per machine after a broker outage. The client's
network thread calls :meth:`MqttAdapter._on_message`, which hands work to the gateway's
emitter (thread-safe). The PUBACK of a QoS 1 message is sent only once its samples are
durable (the message's ``ack``, called by the spool); an ack from an earlier connection is
dropped, since the broker redelivers that message on the new one. With a persistent session
the broker keeps what arrives while the gateway is away.

Each machine's device is watched by a :class:`~microfactory.gateway.sdk.DeviceWatch`: data
decoded for a machine keeps its device live, ``stale_after_s`` without any makes it stale,
and an ``availability`` subscription (a last will such as Tasmota's ``tele/<t>/LWT``) marks
it offline at once and gives a sample of the ``online`` signal.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from microfactory.mqtt.client import Message, MqttClient, Reconnect

from ...sdk import AdapterContext, ConnectionSupervisor, DeviceWatch, PayloadError, RawSample
from .config import MqttAdapterConfig
from .payload import CompiledSubscription, availability, decode
from .session import BrokerSession

# What a {machine} or {signal} topic level may hold: it becomes an InfluxDB tag.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
CONNECT_TIMEOUT_S = 10.0


class MqttAdapter:
    def __init__(self, config: MqttAdapterConfig, context: AdapterContext) -> None:
        self.config = config
        self._emitter = context.emitter
        self._log = context.logger
        self._clock = context.clock
        self._subs = [CompiledSubscription(s) for s in config.subscriptions]
        self._known_machines = context.machines
        self.messages = 0
        self.devices = DeviceWatch(context, config.name, stale_after_s=config.stale_after_s)
        self._stale_by_machine: dict[str, float | None] = {}
        self._declared = False
        v5 = config.protocol == "5"
        self._client = MqttClient(
            config.connection(),
            name=f"mqtt adapter {config.name}",
            protocol=config.protocol,
            persistent=config.persistent_session,
            session_expiry_s=config.session_expiry_s if config.persistent_session else 0,
            receive_maximum=config.receive_maximum if v5 else None,
            manual_ack=True,
            # The broker holds up to its queue limit for us; we keep 1000 unacked in flight.
            max_inflight=1000,
            reconnect=Reconnect.SINGLE_SESSION,
            on_message=self._on_message,
            logger=self._log,
        )
        self.supervisor = ConnectionSupervisor(
            context,
            name=config.name,
            machines=config.machines_referenced(),
            connect=self._connect,
            connect_timeout_s=CONNECT_TIMEOUT_S + 1,
            devices=self.devices,
        )

    @property
    def stale_acks(self) -> int:
        """Acks that came after their connection ended (the broker redelivers those)."""
        return self._client.stale_acks

    async def start(self) -> None:
        await self.supervisor.start()

    async def stop(self, timeout_s: float) -> None:
        await self.supervisor.stop(timeout_s)

    def _stale_after(self, machine: str) -> float | None:
        """A machine's stale limit: the shortest of the data subscriptions that can feed it."""
        if machine not in self._stale_by_machine:
            limits = [
                s.sub.stale_after_s or self.config.stale_after_s
                for s in self._subs
                if s.sub.availability is None
                and (s.sub.machine == machine or "{machine}" in s.sub.topic)
            ]
            known = [limit for limit in limits if limit is not None]
            self._stale_by_machine[machine] = min(known) if known else None
        return self._stale_by_machine[machine]

    def _declare_devices(self) -> None:
        """Watch fixed machines with a stale limit from the start: one that never speaks shows."""
        if self._declared:
            return
        self._declared = True
        for machine in sorted({s.sub.machine for s in self._subs if s.sub.machine}):
            limit = self._stale_after(machine)
            if limit is not None and machine in self._known_machines:
                self.devices.seen(machine, (machine,), limit)

    async def _connect(self) -> BrokerSession:
        session_present = await self._client.connect(CONNECT_TIMEOUT_S)
        self._declare_devices()  # before SUBACK: a retained last will may follow at once
        # connected means subscribed: a message the broker takes before its SUBACK is lost
        await self._client.subscribed(
            [(s.sub.filter, int(s.sub.qos)) for s in self._subs], CONNECT_TIMEOUT_S
        )
        self._log.debug("%s: subscribed (session present: %s)", self.config.name, session_present)
        return BrokerSession(self._client)

    # ------------------------------------------------------------ client callback (its thread)
    def _on_message(self, msg: Message) -> None:
        self.supervisor.data_seen()
        try:
            self._handle(msg.topic, msg.payload, msg.ack)
        except Exception as err:  # top-level guard: a bad message must never kill the thread
            self._log.exception("%s: unexpected error on %s", self.config.name, msg.topic)
            self._emitter.dead_letter(
                self.config.name, msg.topic, f"internal error: {err!r}", msg.payload, msg.ack
            )

    def _handle(self, topic: str, payload: bytes, ack: Callable[[], None] | None) -> None:
        self.messages += 1
        receive_ns = self._clock()
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
                if compiled.sub.availability is not None:
                    try:
                        online = availability(compiled.sub.availability, payload)
                    except PayloadError as err:
                        reason = str(err)
                        break
                    device = machine or compiled.sub.machine or ""
                    self._availability(device, online, topic, payload)
                    sample = RawSample(device, "online", online, None, receive_ns, "good", topic)
                    self._emitter.submit([sample], ack)
                    return
                try:
                    samples = decode(compiled, captured, topic, payload, receive_ns)
                except PayloadError as err:
                    reason = str(err)
                    break
                device = samples[0].machine
                self.devices.seen(device, (device,), self._stale_after(device))
                self._emitter.submit(samples, ack)
                return
            else:
                reason = "no subscription of this adapter matches the topic"
        self._emitter.dead_letter(self.config.name, topic, reason, payload, ack)

    def _availability(self, machine: str, online: bool, topic: str, payload: bytes) -> None:
        """A device said it is there (live again, ending a spell) or gone (offline now)."""
        if online:
            self.devices.seen(machine, (machine,), self._stale_after(machine))
        else:
            word = payload[:40].decode("utf-8", "replace")
            self.devices.offline(
                machine,
                f"{word!r} on {topic}",
                (machine,),
                stale_after_s=self._stale_after(machine),
            )
