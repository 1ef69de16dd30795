"""The one MQTT client against a real Mosquitto: logins, TLS, persistent sessions, reconnects."""

from __future__ import annotations

import asyncio
import logging
import ssl
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from microfactory import contract
from microfactory.mes import db
from microfactory.mes.bridge import MqttBridge
from microfactory.mes.seed import seed_demo
from microfactory.mes.settings import MesSettings
from microfactory.mqtt.client import (
    ConnectRefused,
    Message,
    MqttClient,
    Protocol,
    PublishStatus,
    Reconnect,
)
from microfactory.mqtt.settings import MqttSettings, TlsSettings
from tests.helpers.servers import Mosquitto, MosquittoTls
from tests.helpers.waiting import wait_for

from .certs import BROKER_NAME, Pki, make_pki

pytestmark = pytest.mark.integration

USER, PASSWORD = "gateway", "s3cret-Pa55"


def _passwd(directory: Path) -> Path:
    path = directory / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), USER, PASSWORD], check=True, capture_output=True
    )
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def secured(tmp_path: Path, pki: Pki) -> Iterator[Mosquitto]:
    """Logins required on both listeners; TLS on the second one."""
    tls = MosquittoTls(pki.ca, pki.broker_cert, pki.broker_key)
    with Mosquitto(
        tmp_path / "mosquitto", anonymous=False, password_file=_passwd(tmp_path), tls=tls
    ) as broker:
        yield broker


def _topic() -> str:
    return f"test/{uuid.uuid4().hex[:8]}"


class Inbox:
    """Messages received on the client's thread, awaited from the test's loop."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.subscribed = 0

    def on_message(self, msg: Message) -> None:
        self.messages.append(msg)

    def on_subscribe(self, _mid: int, granted: list[int]) -> None:
        assert all(g < 0x80 for g in granted), granted
        self.subscribed += 1

    async def wait(self, n: int, what: str, timeout_s: float = 10) -> list[Message]:
        await wait_for(lambda: len(self.messages) >= n, timeout_s, what)
        return self.messages


def _single(settings: MqttSettings, inbox: Inbox | None = None, **kw: object) -> MqttClient:
    return MqttClient(
        settings,
        name="test client",
        reconnect=Reconnect.SINGLE_SESSION,
        on_message=inbox.on_message if inbox else None,
        on_subscribe=inbox.on_subscribe if inbox else None,
        **kw,  # type: ignore[arg-type]
    )


async def _roundtrip(settings: MqttSettings) -> None:
    """Subscribe, publish QoS 1 and receive it on one connection."""
    inbox = Inbox()
    client = _single(settings, inbox, client_id=f"rt-{uuid.uuid4().hex[:6]}")
    topic = _topic()
    try:
        await client.connect(5)
        assert await client.subscribed([(topic, 1)], 5) == [1]  # granted QoS, once SUBACKed
        assert inbox.subscribed == 1, "on_subscribe is called too"
        sent = client.publish(topic, b"over the wire", qos=1)
        assert sent.status is PublishStatus.SENT
        assert await asyncio.to_thread(sent.wait, 5)
        [msg] = await inbox.wait(1, "the message back")
        assert (msg.topic, msg.payload, msg.qos) == (topic, b"over the wire", 1)
    finally:
        await client.close()


async def test_password_login_works_and_anonymous_is_refused(secured: Mosquitto) -> None:
    await _roundtrip(MqttSettings(url=secured.url, username=USER, password=PASSWORD))
    for username, password in ((None, None), (USER, "wrong")):
        client = _single(MqttSettings(url=secured.url, username=username, password=password))
        with pytest.raises(ConnectRefused) as exc:
            await client.connect(5)
        assert str(exc.value).startswith(f"broker mqtt://127.0.0.1:{secured.port} refused")
        assert "Not authorized" in exc.value.reason
        assert not client.connected


async def test_tls_with_our_ca_and_the_broker_s_name(
    secured: Mosquitto, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    login = {"username": USER, "password": PASSWORD}
    good = TlsSettings(ca_file=pki.ca, server_name=BROKER_NAME)
    await _roundtrip(MqttSettings(url=secured.tls_url, tls=good, **login))

    # the certificate names broker.workshop.test, not 127.0.0.1: without server_name, refused
    no_name = _single(MqttSettings(url=secured.tls_url, tls=TlsSettings(ca_file=pki.ca), **login))
    with pytest.raises(ssl.SSLCertVerificationError, match="IP address mismatch"):
        await no_name.connect(5)
    # a CA that did not sign the broker's certificate: refused
    wrong = TlsSettings(ca_file=pki.other_ca, server_name=BROKER_NAME)
    wrong_ca = _single(MqttSettings(url=secured.tls_url, tls=wrong, **login))
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await wrong_ca.connect(5)
    # plain MQTT on the TLS port is not a TLS session
    with pytest.raises(OSError):
        await _single(MqttSettings(url=f"mqtt://127.0.0.1:{secured.tls_port}", **login)).connect(3)

    # insecure only when asked, and said at connect
    with caplog.at_level(logging.WARNING):
        insecure = TlsSettings(ca_file=pki.other_ca, insecure=True)
        await _roundtrip(MqttSettings(url=secured.tls_url, tls=insecure, **login))
    assert any("TLS certificate checks are off" in r.getMessage() for r in caplog.records)
    assert not any(PASSWORD in r.getMessage() for r in caplog.records)


async def test_client_certificate_when_the_broker_requires_one(tmp_path: Path, pki: Pki) -> None:
    tls = MosquittoTls(pki.ca, pki.broker_cert, pki.broker_key, require_certificate=True)
    with Mosquitto(tmp_path / "mosquitto", tls=tls) as broker:
        base = TlsSettings(ca_file=pki.ca, server_name=BROKER_NAME)
        with pytest.raises(OSError):  # TLS alert, or the broker closing before CONNACK
            await _single(MqttSettings(url=broker.tls_url, tls=base)).connect(5)
        mine = base.model_copy(update={"cert_file": pki.client_cert, "key_file": pki.client_key})
        await _roundtrip(MqttSettings(url=broker.tls_url, tls=mine))


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
async def test_persistent_session_keeps_queued_messages_across_a_reconnect(
    mosquitto: Mosquitto, protocol: Protocol
) -> None:
    settings = MqttSettings(url=mosquitto.url)
    inbox = Inbox()
    keeper = _single(
        settings,
        inbox,
        client_id=f"keeper-{uuid.uuid4().hex[:6]}",
        protocol=protocol,
        persistent=True,
        session_expiry_s=300,
        receive_maximum=100,
        manual_ack=True,
    )
    topic = _topic()
    sender = _single(settings, client_id=f"sender-{uuid.uuid4().hex[:6]}")
    try:
        assert await keeper.connect(5) is False  # a new session
        keeper.subscribe([(f"{topic}/#", 1)])
        await wait_for(lambda: inbox.subscribed == 1, 5, "SUBACK")
        await keeper.close()

        await sender.connect(5)
        for i in range(3):
            assert await asyncio.to_thread(sender.publish(f"{topic}/{i}", b"%d" % i, qos=1).wait, 5)

        assert await keeper.connect(5) is True  # the broker kept the session ...
        got = await inbox.wait(3, "the messages queued while away")  # ... and what came in it
        assert sorted(m.payload for m in got) == [b"0", b"1", b"2"]
        for m in got[1:]:
            assert m.ack is not None
            m.ack()
        unacked = got[0]
        await keeper.close()

        # the one not acknowledged comes again on the next connection; the old ack is void
        assert await keeper.connect(5) is True
        [again] = (await inbox.wait(4, "the redelivery"))[3:]
        assert again.payload == unacked.payload
        assert unacked.ack is not None
        unacked.ack()
        assert keeper.stale_acks == 1
        assert again.ack is not None
        again.ack()
        await asyncio.sleep(0.3)
        await keeper.close()
        assert await keeper.connect(5) is True
        await asyncio.sleep(0.5)
        assert len(inbox.messages) == 4, "an acknowledged message must not come back"
    finally:
        await keeper.close()
        await sender.close()


async def test_auto_mode_reconnects_after_a_broker_restart(mosquitto: Mosquitto) -> None:
    inbox = Inbox()
    topic = _topic()
    keeper = MqttClient(
        MqttSettings(url=mosquitto.url),
        name="auto keeper",
        client_id=f"auto-{uuid.uuid4().hex[:6]}",
        persistent=True,
        reconnect=Reconnect.AUTO,
        reconnect_max_s=2,
        on_connect=lambda _present: keeper.subscribe([(topic, 1)]),
        on_message=inbox.on_message,
        on_subscribe=inbox.on_subscribe,
    )
    keeper.start()
    try:
        assert await asyncio.to_thread(keeper.wait_connected, 5)
        await wait_for(lambda: inbox.subscribed == 1, 5, "SUBACK")
        await asyncio.to_thread(mosquitto.stop)
        await wait_for(lambda: not keeper.connected, 10, "the client noticing the outage")
        # published while the broker is away: queued by the client, sent after the reconnect
        assert keeper.publish(topic, b"while away", qos=1).status is PublishStatus.QUEUED
        await asyncio.to_thread(mosquitto.start)
        await wait_for(lambda: keeper.connects == 2, 15, "paho reconnecting by itself")
        [msg] = await inbox.wait(1, "the queued message")
        assert msg.payload == b"while away"
    finally:
        started = time.monotonic()
        await asyncio.to_thread(keeper.stop, 3)
        assert time.monotonic() - started < 4


async def test_mes_bridge_over_mqtts_with_credentials(
    secured: Mosquitto, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "MQTT_URL": secured.tls_url,
        "MQTT_USERNAME": USER,
        "MQTT_PASSWORD": PASSWORD,
        "MQTT_TLS__CA_FILE": str(pki.ca),
        "MQTT_TLS__SERVER_NAME": BROKER_NAME,
    }.items():
        monkeypatch.setenv(f"MICROFACTORY_MES__{name}", value)
    settings = MesSettings(db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}", site="demo", demo=True)
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    sessions = db.session_factory(engine)
    with db.session_scope(sessions) as session:
        seed_demo(session)
    bridge = MqttBridge(settings, sessions)
    bridge.start()
    gateway = _single(
        MqttSettings(
            url=secured.tls_url,
            username=USER,
            password=PASSWORD,
            tls=TlsSettings(ca_file=pki.ca, server_name=BROKER_NAME),
        )
    )
    try:
        assert await asyncio.to_thread(bridge.wait_connected, 10), "bridge did not connect"
        assert bridge.status() == "connected"
        await gateway.connect(5)
        event = contract.StateChanged(
            event_id=uuid.uuid4().hex,
            site="demo",
            machine="mill-1",
            ts_ns=time.time_ns(),
            state="running",
        )
        topic = contract.event_topic("demo", "mill-1")
        for payload in (event.model_dump_json().encode(), b"not an event"):
            assert await asyncio.to_thread(gateway.publish(topic, payload, qos=1).wait, 5)
        await wait_for(
            lambda: bridge.ingested + sum(bridge.refused.values()) >= 2, 10, "both events handled"
        )
        assert (bridge.ingested, bridge.refused) == (1, {"invalid": 1})
    finally:
        await gateway.close()
        await asyncio.to_thread(bridge.stop)
        engine.dispose()
