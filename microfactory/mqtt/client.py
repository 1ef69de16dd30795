"""The one MQTT client of the product: a typed wrapper around paho-mqtt 2.x.

This is the only module that imports paho. It owns what every program used to set up by
hand: the client for MQTT 3.1.1 or 5 with a persistent session, credentials, TLS from
:class:`~microfactory.mqtt.settings.TlsSettings`, manual acknowledgement, in-flight and
queue limits, keep-alive, and reconnection in one of two modes (:class:`Reconnect`):

- ``AUTO``: paho reconnects by itself with capped exponential backoff; for long-lived
  clients (the MES bridge, the MES link, the simulators). Call :meth:`MqttClient.start`
  and :meth:`MqttClient.stop`.
- ``SINGLE_SESSION``: one session per :meth:`MqttClient.connect`; when it ends, it stays
  ended (paho's ``reconnect_on_failure=False``) and :meth:`MqttClient.session_ended` says
  why, so a supervisor (the gateway's ``ConnectionSupervisor``) owns backoff and gaps.

Callbacks receive plain Python values (:class:`Message`, ``bool``, ``str``), never paho types.

Thread-safety: paho runs its network loop in a thread of its own, and every callback given
to :class:`MqttClient` is called *in that thread*: keep callbacks short and hand work on
(the gateway's emitter and a ``threading.Event`` are fine). :meth:`MqttClient.publish`,
:meth:`MqttClient.subscribe` and a message's ``ack`` may be called from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .settings import BrokerAddress, MqttSettings, TlsSettings

__all__ = [
    "ConnectRefused",
    "Delivery",
    "Message",
    "MqttClient",
    "MqttError",
    "Protocol",
    "PublishError",
    "PublishStatus",
    "Reconnect",
    "SessionLost",
    "tls_context",
]

log = logging.getLogger(__name__)

Protocol = Literal["3.1.1", "5"]


class Reconnect(StrEnum):
    """Who reconnects after a lost connection."""

    AUTO = "auto"  # paho, with capped backoff, forever
    SINGLE_SESSION = "single_session"  # nobody: the caller connects again


class MqttError(OSError):
    """An MQTT failure, in words (an OSError, like the socket errors it sits beside)."""


class ConnectRefused(MqttError):
    """The broker answered CONNECT with a refusal (bad credentials, not authorised, …)."""

    def __init__(self, address: BrokerAddress, reason: str) -> None:
        super().__init__(f"broker {address} refused the connection: {reason}")
        self.reason = reason


class SessionLost(MqttError):
    """The connection closed before the broker accepted the session."""


class PublishError(MqttError):
    """A published message was not delivered (dropped from the queue, or the client stopped)."""


@dataclass(frozen=True, slots=True)
class Message:
    """A received message in plain values.

    ``topic`` is the topic as text; a topic that is not valid UTF-8 (the broker should refuse
    it, not all do) has its bad bytes replaced, and ``raw_topic`` keeps the bytes.
    ``ack`` is set for a QoS 1/2 message of a ``manual_ack`` client: call it (any thread)
    once the message is safe; an ack from an earlier connection is ignored, since the broker
    redelivers that message on the new one.
    """

    topic: str
    raw_topic: bytes
    payload: bytes
    qos: int
    retain: bool
    ack: Callable[[], None] | None = None


class PublishStatus(StrEnum):
    SENT = "sent"  # written to the connection
    QUEUED = "queued"  # kept by the client until the broker is back
    REFUSED = "refused"  # not kept (queue full, payload too big, …)


class Delivery:
    """What became of one :meth:`MqttClient.publish`; :meth:`wait` for the broker's PUBACK."""

    __slots__ = ("_info",)

    def __init__(self, info: paho.MQTTMessageInfo) -> None:
        self._info = info

    @property
    def status(self) -> PublishStatus:
        if self._info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            return PublishStatus.SENT
        if self._info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN:
            return PublishStatus.QUEUED
        return PublishStatus.REFUSED

    @property
    def reason(self) -> str:
        return paho.error_string(self._info.rc)

    def done(self) -> bool:
        """True once the broker has acknowledged the message (QoS 0: once it was written)."""
        return self._info.is_published()

    def wait(self, timeout_s: float) -> bool:
        """Block until acknowledged (True) or ``timeout_s`` passed (False); PublishError if lost."""
        try:
            self._info.wait_for_publish(max(0.0, timeout_s))
        except (RuntimeError, ValueError) as err:
            raise PublishError(str(err)) from err
        return self._info.is_published()


def tls_context(tls: TlsSettings | None) -> ssl.SSLContext:
    """An SSLContext for a broker: its CA (or the system's), our certificate, its name."""
    settings = tls or TlsSettings()
    ctx: ssl.SSLContext = _NamedContext(ssl.PROTOCOL_TLS_CLIENT)
    if settings.server_name:
        ctx.server_name = settings.server_name  # type: ignore[attr-defined]
    if settings.ca_file is not None:
        ctx.load_verify_locations(cafile=str(settings.ca_file))
    else:
        ctx.load_default_certs()
    if settings.cert_file is not None:
        key = str(settings.key_file) if settings.key_file is not None else None
        ctx.load_cert_chain(str(settings.cert_file), key)
    if settings.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _NamedContext(ssl.SSLContext):
    """Sends ``server_name`` (SNI) and checks the certificate against it instead of the host.

    paho wraps its socket with ``server_hostname=<the URL's host>``; this is the one place
    to say otherwise, e.g. when the broker is reached by IP address.
    """

    server_name: str | None = None

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> ssl.SSLSocket:
        if self.server_name:
            kwargs["server_hostname"] = self.server_name
        return super().wrap_socket(sock, *args, **kwargs)


@dataclass(slots=True)
class _Session:
    """The futures of one SINGLE_SESSION connection, resolved from paho's thread."""

    loop: asyncio.AbstractEventLoop
    client: paho.Client
    accepted: asyncio.Future[bool]
    ended: asyncio.Future[str]
    subscribed: dict[int, asyncio.Future[list[int]]] = field(default_factory=dict)  # mid -> SUBACK

    def resolve(
        self, fut: asyncio.Future[Any], value: Any = None, error: Exception | None = None
    ) -> None:
        def set_it() -> None:
            if fut.done():
                return
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(value)

        self.loop.call_soon_threadsafe(set_it)


class MqttClient:
    """One MQTT connection of a program; keyword-only, validated, no module state.

    ``settings`` says where and who (URL, credentials, TLS, keep-alive); ``client_id``
    overrides its ``client_id``. ``persistent`` asks the broker to keep the session (and
    queue QoS 1/2 messages) while we are away: 3.1.1 ``clean_session=False``, 5
    ``clean_start=False`` with ``session_expiry_s``. ``receive_maximum`` (MQTT 5) caps what
    the broker sends before we acknowledge. ``name`` labels the log lines.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        name: str,
        client_id: str | None = None,
        protocol: Protocol = "3.1.1",
        persistent: bool = False,
        session_expiry_s: int = 0,
        receive_maximum: int | None = None,
        manual_ack: bool = False,
        max_inflight: int = 20,
        max_queued: int = 0,
        reconnect: Reconnect = Reconnect.AUTO,
        reconnect_min_s: int = 1,
        reconnect_max_s: int = 30,
        on_connect: Callable[[bool], None] | None = None,
        on_disconnect: Callable[[str, bool], None] | None = None,
        on_message: Callable[[Message], None] | None = None,
        on_subscribe: Callable[[int, list[int]], None] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        if protocol not in ("3.1.1", "5"):
            raise ValueError(f"protocol: expected '3.1.1' or '5', got {protocol!r}")
        if not 0 <= session_expiry_s <= 2**32 - 1:
            raise ValueError(f"session_expiry_s: expected 0..4294967295, got {session_expiry_s}")
        if receive_maximum is not None and not 1 <= receive_maximum <= 65535:
            raise ValueError(f"receive_maximum: expected 1..65535, got {receive_maximum}")
        if max_inflight < 1 or max_queued < 0:
            raise ValueError("max_inflight must be >= 1 and max_queued >= 0")
        if not 0 < reconnect_min_s <= reconnect_max_s:
            raise ValueError("expected 0 < reconnect_min_s <= reconnect_max_s")
        self.settings = settings
        self.address = settings.address
        self.name = name
        self.client_id = client_id or settings.client_id
        self.protocol: Protocol = protocol
        self.persistent = persistent
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self.manual_ack = manual_ack
        self.reconnect = reconnect
        self._max_inflight = max_inflight
        self._max_queued = max_queued
        self._backoff = (reconnect_min_s, reconnect_max_s)
        self._on_connect = on_connect
        self._on_disconnect = on_disconnect
        self._on_message = on_message
        self._on_subscribe = on_subscribe
        self._log = logger or log
        # State-change lines: the supervisor reports them for a SINGLE_SESSION client.
        self._news = logging.INFO if reconnect is Reconnect.AUTO else logging.DEBUG
        self._paho: paho.Client | None = None
        self._session: _Session | None = None
        self._stopping = False
        self._connected = threading.Event()
        self._lock = threading.Lock()
        # An ack is only valid on the connection that received the message: after a
        # reconnect the broker redelivers what was not acknowledged, under packet ids it
        # may reuse for other messages.
        self._generation = 0
        self._last_failure: str | None = None
        self.stale_acks = 0
        self.connects = 0

    # ------------------------------------------------------------------ state
    @property
    def connected(self) -> bool:
        """True while the broker has accepted the session and the connection is up."""
        return self._connected.is_set()

    def wait_connected(self, timeout_s: float) -> bool:
        """Block until connected (True) or ``timeout_s`` passed (False)."""
        return self._connected.wait(timeout_s)

    # ------------------------------------------------------------------ AUTO mode
    def start(self) -> None:
        """Connect in the background and keep reconnecting (AUTO mode); returns at once."""
        if self.reconnect is not Reconnect.AUTO:
            raise RuntimeError(f"{self.name}: start() is for Reconnect.AUTO; use connect()")
        if self._paho is not None:
            return
        self._stopping = False
        client = self._new_paho()
        self._paho = client
        self._log.log(
            self._news, "%s: connecting to %s as %s", self.name, self.address, self.client_id
        )
        client.connect_async(
            self.address.host, self.address.port, self.settings.keepalive_s, **self._connect_args()
        )
        client.loop_start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Disconnect and end the network thread within ``timeout_s`` (blocking)."""
        client, self._paho = self._paho, None
        if client is None:
            return
        self._stopping = True
        client.disconnect()
        stopper = threading.Thread(target=client.loop_stop, name=f"mqtt-stop:{self.name}")
        stopper.start()
        stopper.join(timeout_s)
        if stopper.is_alive():
            self._log.warning("%s: network thread did not stop within %.1f s", self.name, timeout_s)
        self._connected.clear()

    # ------------------------------------------------------------------ SINGLE_SESSION mode
    async def connect(self, timeout_s: float = 10.0) -> bool:
        """Open one session (SINGLE_SESSION mode); return whether the broker kept it.

        Raises :class:`ConnectRefused`, :class:`SessionLost`, ``TimeoutError`` or the
        ``OSError`` of the socket or TLS handshake (``ssl.SSLError`` is one).
        """
        if self.reconnect is not Reconnect.SINGLE_SESSION:
            raise RuntimeError(f"{self.name}: connect() is for Reconnect.SINGLE_SESSION")
        await self.close()
        loop = asyncio.get_running_loop()
        self._stopping = False
        client = self._new_paho()
        session = _Session(loop, client, loop.create_future(), loop.create_future())
        self._session = session
        self._paho = client
        try:
            await asyncio.to_thread(
                client.connect,
                self.address.host,
                self.address.port,
                self.settings.keepalive_s,
                **self._connect_args(),
            )
            client.loop_start()
            return await asyncio.wait_for(asyncio.shield(session.accepted), timeout_s)
        except BaseException:
            await self.close()
            raise

    async def session_ended(self) -> str:
        """Wait until the current session ends; return why, in words."""
        session = self._session
        if session is None:
            return "not connected"
        return await asyncio.shield(session.ended)

    async def close(self, timeout_s: float = 5.0) -> None:
        """End the current session, if any (SINGLE_SESSION mode); never raises."""
        client, self._paho = self._paho, None
        if client is None:
            return
        self._stopping = True
        client.disconnect()
        try:
            await asyncio.wait_for(asyncio.to_thread(client.loop_stop), timeout_s)
        except TimeoutError:
            self._log.warning("%s: network thread did not stop within %.1f s", self.name, timeout_s)
        self._connected.clear()

    # ------------------------------------------------------------------ traffic
    def subscribe(self, filters: Sequence[tuple[str, int]]) -> None:
        """Subscribe to ``(filter, qos)`` pairs; granted QoS come to ``on_subscribe``."""
        client = self._paho
        if client is None or not filters:
            return
        rc, _mid = client.subscribe(list(filters))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._log.warning("%s: subscribe not sent: %s", self.name, paho.error_string(rc))

    async def subscribed(self, filters: Sequence[tuple[str, int]], timeout_s: float) -> list[int]:
        """Subscribe (SINGLE_SESSION mode) and return the granted QoS once the SUBACK is in.

        Until the broker has acknowledged SUBSCRIBE, a message published to a new session's
        filters is not routed to it: a subscriber that calls itself connected sooner loses
        what arrives in between. Raises ``TimeoutError`` when no SUBACK comes in time.
        """
        session, client = self._session, self._paho
        if session is None or client is None:
            raise RuntimeError(f"{self.name}: subscribed() needs a session opened by connect()")
        if not filters:
            return []
        with self._lock:  # the SUBACK callback waits here until its future is registered
            rc, mid = client.subscribe(list(filters))
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise ConnectionError(f"{self.name}: subscribe not sent: {paho.error_string(rc)}")
            suback = session.subscribed[mid] = session.loop.create_future()
        try:
            return await asyncio.wait_for(suback, timeout_s)
        finally:
            session.subscribed.pop(mid, None)

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
    ) -> Delivery:
        """Publish (any thread); while disconnected an AUTO client queues QoS 1/2 messages."""
        client = self._paho
        if client is None:
            raise PublishError(f"{self.name}: not started")
        return Delivery(client.publish(topic, payload, qos=qos, retain=retain))

    # ------------------------------------------------------------------ paho set-up
    def _new_paho(self) -> paho.Client:
        v5 = self.protocol == "5"
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            # 3.1.1 only; 5 says it in CONNECT (clean_start)
            clean_session=None if v5 else not self.persistent,
            reconnect_on_failure=self.reconnect is Reconnect.AUTO,
            manual_ack=self.manual_ack,
        )
        if self.settings.username_from_client_id:
            # a broker with use_username_as_clientid: this connection is its own user
            client.username_pw_set(self.client_id, self.settings.password)
        elif self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        if self.address.tls:
            if self.settings.tls is not None and self.settings.tls.insecure:
                self._log.warning(
                    "%s: TLS certificate checks are off for %s (tls.insecure: true)",
                    self.name,
                    self.address,
                )
            client.tls_set_context(tls_context(self.settings.tls))
        elif self.settings.tls is not None:
            raise ValueError(f"{self.name}: a TLS block needs an mqtts:// URL, got {self.address}")
        client.max_inflight_messages_set(self._max_inflight)
        client.max_queued_messages_set(self._max_queued)
        client.reconnect_delay_set(min_delay=self._backoff[0], max_delay=self._backoff[1])
        client.on_connect = self._paho_connect
        client.on_connect_fail = self._paho_connect_fail
        client.on_disconnect = self._paho_disconnect
        client.on_message = self._paho_message
        client.on_subscribe = self._paho_subscribe
        return client

    def _connect_args(self) -> dict[str, Any]:
        if self.protocol != "5":
            return {}
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.session_expiry_s if self.persistent else 0
        if self.receive_maximum is not None:
            props.ReceiveMaximum = self.receive_maximum
        return {"clean_start": not self.persistent, "properties": props}

    # ------------------------------------------------------------------ paho callbacks (its thread)
    def _paho_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        if client is not self._paho:
            return
        if reason.is_failure:
            text = str(reason)
            level = logging.WARNING if text != self._last_failure else logging.DEBUG
            self._last_failure = text
            self._log.log(
                level, "%s: broker %s refused the connection: %s", self.name, self.address, text
            )
            if self._session is not None:
                self._session.resolve(
                    self._session.accepted, error=ConnectRefused(self.address, text)
                )
            return
        with self._lock:
            self._generation += 1
        self.connects += 1
        self._last_failure = None
        self._connected.set()
        self._log.log(
            self._news,
            "%s: connected to %s (session present: %s)",
            self.name,
            self.address,
            flags.session_present,
        )
        if self._on_connect is not None:
            self._on_connect(bool(flags.session_present))
        if self._session is not None:
            self._session.resolve(self._session.accepted, bool(flags.session_present))

    def _paho_connect_fail(self, client: paho.Client, _userdata: Any) -> None:
        text = "cannot reach the broker"
        if text != self._last_failure:
            self._log.warning("%s: %s %s; retrying", self.name, text, self.address)
            self._last_failure = text

    def _paho_disconnect(
        self,
        client: paho.Client,
        _userdata: Any,
        _flags: paho.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        ours = self._stopping or client is not self._paho  # our stop, or an old client
        text = "disconnected by us" if ours else f"connection lost: {reason}"
        if was_connected:
            level = self._news if ours else max(self._news, logging.WARNING)
            if self.reconnect is Reconnect.SINGLE_SESSION:
                level = logging.DEBUG  # the supervisor reports it
            self._log.log(level, "%s: %s", self.name, text)
            if self._on_disconnect is not None:
                self._on_disconnect(text, not ours)
        session = self._session
        if session is not None and session.client is client:  # not a late call of an old one
            session.resolve(session.accepted, error=SessionLost(f"{self.address}: {text}"))
            session.resolve(session.ended, text)

    def _paho_message(self, client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        handler = self._on_message
        if handler is None:
            return
        ack: Callable[[], None] | None = None
        if self.manual_ack and msg.qos:
            ack = self._ack_for(client, msg.mid, msg.qos)
        raw_topic = bytes(msg._topic)  # msg.topic raises on a topic that is not UTF-8
        handler(
            Message(
                topic=raw_topic.decode("utf-8", "replace"),
                raw_topic=raw_topic,
                payload=bytes(msg.payload),
                qos=msg.qos,
                retain=bool(msg.retain),
                ack=ack,
            )
        )

    def _ack_for(self, client: paho.Client, mid: int, qos: int) -> Callable[[], None]:
        generation = self._generation

        def ack() -> None:
            with self._lock:
                if generation != self._generation or client is not self._paho:
                    self.stale_acks += 1  # the broker redelivers it on the new connection
                    return
            client.ack(mid, qos)

        return ack

    def _paho_subscribe(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        granted = [r.value for r in reasons]
        refused = [g for g in granted if g >= 0x80]
        if refused:
            self._log.warning("%s: broker refused %d subscription(s)", self.name, len(refused))
        if self._on_subscribe is not None:
            self._on_subscribe(mid, granted)
        with self._lock:  # after on_subscribe: whoever awaits the SUBACK sees its effects
            session = self._session
            suback = session.subscribed.get(mid) if session is not None else None
        if session is not None and suback is not None:
            session.resolve(suback, granted)
