"""The broker ``microfactory broker config`` generates, run by a real Mosquitto 2.0 with exactly
the files it wrote, probed with real clients: who may connect, who may publish and read what,
no session takeover, the gateway and the MES working with the generated logins, and TLS."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
import yaml
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from microfactory import contract
from microfactory.cli.main import app
from microfactory.cli.ports import free_port
from microfactory.gateway.broker_config.credentials import Secrets, read_secrets
from microfactory.gateway.config import load_site_config
from microfactory.gateway.runtime import Gateway
from microfactory.gateway.sinks.mes_events.link import MesLink
from microfactory.mes import db
from microfactory.mes.bridge import MqttBridge
from microfactory.mes.seed import seed_demo, start_demo_batches
from microfactory.mes.settings import MesSettings
from microfactory.mqtt.client import ConnectRefused, Message, MqttClient, Reconnect
from microfactory.mqtt.settings import MqttSettings, TlsSettings
from tests.helpers.markers import starts_server
from tests.helpers.servers import Mosquitto, MosquittoConfigured
from tests.helpers.waiting import wait_for, wait_for_sync
from tests.mqtt.certs import BROKER_NAME, Pki, make_pki

pytestmark = pytest.mark.integration

SITE = "demo"  # the MES's demo data knows machines mill-1 and laser-1
GW = "gw-sec"  # mqtt.client_id: the adapter connects as gw-sec-plugs, the MES link as gw-sec-mes
ADAPTER, LINK, MES = f"{GW}-plugs", f"{GW}-mes", contract.mes_client_id(SITE)
EVENTS, CONTEXT = contract.event_subscription(SITE), contract.context_subscription(SITE)


def _site_file(tmp: Path, url: str) -> Path:
    path = tmp / "site.yaml"
    data = {
        "site": SITE,
        "mqtt": {"url": url, "client_id": GW},
        "machines": [{"id": "mill-1"}, {"id": "laser-1"}],
        "adapters": [
            {
                "type": "mqtt",
                "name": "plugs",
                "subscriptions": [
                    {"topic": "plant/{machine}/{signal}", "format": "text", "value": {}},
                ],
            }
        ],
        "mes_link": {"publish_timeout_s": 5, "connect_wait_s": 5},
        "local_history": {"enabled": False},
        "spool": {"path": str(tmp / "spool.sqlite"), "durability": "normal"},
        "health": {"port": 0},
    }
    path.write_text(yaml.safe_dump(data))
    return path


@dataclass
class Secured:
    """The generated files, the broker running them, and the secrets the programs were given."""

    broker: MosquittoConfigured
    out: Path
    site_file: Path
    secrets: Secrets
    tls_url: str | None = None

    @property
    def url(self) -> str:
        return self.broker.url

    def gateway(self, client_id: str, url: str | None = None, **tls: Any) -> MqttSettings:
        """What the gateway's connection ``client_id`` uses with gateway.env."""
        return MqttSettings(
            url=url or self.url,
            client_id=client_id,
            username_from_client_id=True,
            password=self.secrets.gateway,
            tls=TlsSettings(**tls) if tls else None,
        )

    def login(self, user: str, password: str | None = None) -> MqttSettings:
        if password is None:
            password = self.secrets.mes if user == MES else self.secrets.devices[user]
        return MqttSettings(url=self.url, client_id=user, username=user, password=password)


def generate(tmp: Path, *args: str, port: int | None = None) -> tuple[Path, Path, int]:
    """Run ``microfactory broker config`` as a user would; return (out, site file, port)."""
    port = port or free_port()
    site_file = _site_file(tmp, f"mqtt://127.0.0.1:{port}")
    out = tmp / "broker"
    run_as = ["--run-as-user", "root"] if os.geteuid() == 0 else []  # see servers.Mosquitto
    result = CliRunner().invoke(
        app,
        [
            *("broker", "config", "--config", str(site_file), "--out", str(out)),
            *("--data-dir", str(tmp / "broker-data"), *run_as, *args),
        ],
    )
    assert result.exit_code == 0, result.output
    return out, site_file, port


@pytest.fixture
@starts_server("Mosquitto (generated config)")
def secured(tmp_path: Path) -> Iterator[Secured]:
    out, site_file, port = generate(tmp_path)
    with MosquittoConfigured(tmp_path / "mosquitto", out / "mosquitto.conf", port) as broker:
        yield Secured(broker, out, site_file, read_secrets(out))


class Inbox:
    """A subscriber: the messages one identity receives, in order."""

    def __init__(self, settings: MqttSettings, name: str) -> None:
        self.messages: list[Message] = []
        self.client = MqttClient(
            settings,
            name=name,
            reconnect=Reconnect.SINGLE_SESSION,
            on_message=self.messages.append,
        )

    async def open(self, *filters: str) -> list[int]:
        await self.client.connect()
        return await self.client.subscribed([(f, 1) for f in filters], 5)

    async def publish(self, topic: str, payload: bytes) -> None:
        """Publish on this same connection (a second one of the user would replace it)."""
        assert await asyncio.to_thread(self.client.publish(topic, payload, qos=1).wait, 5)

    def topics(self) -> list[str]:
        return [m.topic for m in self.messages]

    async def until(self, payload: bytes) -> list[str]:
        await wait_for(lambda: any(m.payload == payload for m in self.messages), 10, repr(payload))
        return self.topics()


async def _publish(settings: MqttSettings, *messages: tuple[str, bytes]) -> None:
    """Publish QoS 1 one after the other, each acknowledged before the next."""
    client = MqttClient(
        settings, name=f"publisher {settings.client_id}", reconnect=Reconnect.SINGLE_SESSION
    )
    await client.connect()
    try:
        for topic, payload in messages:
            assert await asyncio.to_thread(client.publish(topic, payload, qos=1).wait, 5)
    finally:
        await client.close()


# ------------------------------------------------------------------ who may connect
async def test_anonymous_and_wrong_passwords_are_refused(secured: Secured) -> None:
    for settings, what in (
        (MqttSettings(url=secured.url, client_id="anyone"), "anonymous"),
        (secured.login(MES, "not-the-password"), "wrong password"),
        (
            secured.gateway(ADAPTER).model_copy(update={"password": "nope"}),
            "wrong gateway password",
        ),
        (secured.login("machine-mill-1", secured.secrets.mes), "another user's password"),
    ):
        client = MqttClient(settings, name=what, reconnect=Reconnect.SINGLE_SESSION)
        with pytest.raises(
            ConnectRefused, match=r"(?i)not authori[sz]ed|bad user name or password"
        ):
            await client.connect()
    ok = MqttClient(secured.gateway(ADAPTER), name="gateway", reconnect=Reconnect.SINGLE_SESSION)
    assert await ok.connect() in (True, False)  # accepted
    await ok.close()


# ------------------------------------------------------------------ who may publish and read what
async def test_each_identity_publishes_only_its_own_topics(secured: Secured) -> None:
    adapter = Inbox(secured.gateway(ADAPTER), "adapter")
    link = Inbox(secured.gateway(LINK), "link")
    mes = Inbox(secured.login(MES), "mes")
    assert await adapter.open("plant/+/+") == [1]
    assert await link.open(CONTEXT) == [1]
    assert await mes.open(EVENTS) == [1]
    try:
        # a machine: another machine's topic, context and events go nowhere; its own arrives
        await _publish(
            secured.login("machine-mill-1"),
            ("plant/laser-1/power_active", b"forged"),
            (contract.context_topic(SITE, "mill-1"), b"forged"),
            (contract.event_topic(SITE, "mill-1"), b"forged"),
            ("plant/mill-1/power_active", b"own"),
        )
        # the link may not write context, the MES may not write events
        await link.publish(contract.context_topic(SITE, "mill-1"), b"forged")
        await mes.publish(contract.event_topic(SITE, "mill-1"), b"forged")
        # what each may write arrives: the MES's context at the link, the link's event at the MES
        await mes.publish(contract.context_topic(SITE, "mill-1"), b"context")
        await link.publish(contract.event_topic(SITE, "mill-1"), b"event")
        # in order per subscriber: a forged message would have arrived before the real one
        assert await adapter.until(b"own") == ["plant/mill-1/power_active"]
        assert await link.until(b"context") == [contract.context_topic(SITE, "mill-1")]
        assert await mes.until(b"event") == [contract.event_topic(SITE, "mill-1")]
        assert all(m.payload != b"forged" for m in adapter.messages + link.messages + mes.messages)
    finally:
        for inbox in (adapter, link, mes):
            await inbox.client.close()


async def test_a_machine_reads_neither_the_events_nor_anything_else(secured: Secured) -> None:
    # Mosquitto 2.0 grants the SUBSCRIBE and checks read access on each message it routes
    spy = Inbox(secured.login("machine-mill-1"), "spy")
    link = Inbox(secured.gateway(LINK), "link")
    mes = Inbox(secured.login(MES), "mes")
    await spy.open(EVENTS, CONTEXT, "#")
    await link.open(CONTEXT)
    await mes.open(EVENTS)
    try:
        await link.publish(contract.event_topic(SITE, "mill-1"), b"event")
        await mes.publish(contract.context_topic(SITE, "mill-1"), b"context")
        await _publish(secured.login("machine-laser-1"), ("plant/laser-1/power_active", b"1"))
        await mes.until(b"event")
        await link.until(b"context")
        # the broker writes to a connection in order: what it routed to the spy before this
        # PUBACK has been handled by the time the PUBACK is
        await spy.publish("plant/mill-1/power_active", b"2")
        assert spy.topics() == []
    finally:
        for inbox in (spy, link, mes):
            await inbox.client.close()


# ------------------------------------------------------------------ session takeover (finding 3)
def _attacker(url: str, username: str, password: str) -> paho.Client:
    """A client with a machine's login claiming the MES's client id; returns once accepted."""
    host, port = url.removeprefix("mqtt://").split(":")
    client = paho.Client(
        CallbackAPIVersion.VERSION2, client_id=MES, clean_session=False, protocol=paho.MQTTv311
    )
    client.username_pw_set(username, password)
    client.connect(host, int(port))
    client.loop_start()
    wait_for_sync(client.is_connected, 10, "attacker accepted")
    return client


def _mes_session(url: str, dropped: list[str], **login: Any) -> MqttClient:
    settings = MqttSettings(url=url, client_id=MES, **login)
    client = MqttClient(
        settings,
        name="MES",
        persistent=True,
        on_disconnect=lambda reason, _unexpected: dropped.append(reason),
    )
    client.start()
    assert client.wait_connected(10)
    return client


async def test_a_machine_login_cannot_take_the_mes_session_over(secured: Secured) -> None:
    dropped: list[str] = []
    mes = _mes_session(secured.url, dropped, username=MES, password=secured.secrets.mes)
    attacker = _attacker(secured.url, "machine-mill-1", secured.secrets.devices["machine-mill-1"])
    try:
        # the broker handled the attacker's CONNECT before its CONNACK: a takeover is done
        delivery = mes.publish(contract.context_topic(SITE, "mill-1"), b"{}", qos=1)
        assert await asyncio.to_thread(delivery.wait, 5)
        assert (mes.connects, dropped) == (1, []), "the MES was disconnected"
    finally:
        attacker.loop_stop()
        attacker.disconnect()
        mes.stop()


async def test_without_the_generated_config_the_same_client_takes_the_session_over(
    mosquitto: Mosquitto,
) -> None:
    """The control: on an open broker the attack above works (what finding 3 reported)."""
    dropped: list[str] = []
    mes = _mes_session(mosquitto.url, dropped)
    attacker = _attacker(mosquitto.url, "anyone", "anything")
    try:
        await wait_for(lambda: dropped, 10, "the MES kicked off")
    finally:
        attacker.loop_stop()
        attacker.disconnect()
        mes.stop()


# ------------------------------------------------------------------ the real programs
def _env(path: Path) -> dict[str, str]:
    lines = [x for x in path.read_text().splitlines() if x and not x.startswith("#")]
    return dict(x.split("=", 1) for x in lines)


async def test_the_gateway_and_the_mes_work_with_the_generated_logins(
    secured: Secured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.upper().startswith("MICROFACTORY_"):
            monkeypatch.delenv(name)
    for key, value in _env(secured.out / "gateway.env").items():
        monkeypatch.setenv(key, value)
    site = load_site_config(secured.site_file)  # with gateway.env, as systemd would start it
    mes_env = _env(secured.out / "mes.env")
    settings = MesSettings(
        db_url=f"sqlite:///{tmp_path / 'mes.sqlite'}",
        mqtt_url=secured.url,
        site=mes_env["MICROFACTORY_MES__SITE"],
        mqtt_username=mes_env["MICROFACTORY_MES__MQTT_USERNAME"],
        mqtt_password=mes_env["MICROFACTORY_MES__MQTT_PASSWORD"],
        demo=True,
    )
    engine = db.make_engine(settings.db_url)
    db.migrate(engine)
    sessions = db.session_factory(engine)
    with db.session_scope(sessions) as session:
        seed_demo(session)
        start_demo_batches(session)  # mill-1 runs SO-1001: its context is published
    bridge = MqttBridge(settings, sessions)
    bridge.start()
    gw = Gateway(site)
    try:
        assert await asyncio.to_thread(bridge.wait_connected, 10)
        await gw.start()
        (link,) = [s for s in gw.sinks if isinstance(s, MesLink)]
        await wait_for(lambda: "mill-1" in link.context, 10, "the MES's context at the gateway")
        assert link.context["mill-1"]["order"] == "SO-1001"
        await wait_for(
            lambda: gw.health.connections.get("plugs") == "connected", 10, "adapter connected"
        )
        machine = secured.login("machine-mill-1")
        for state in ("running", "idle", "running"):
            await _publish(machine, ("plant/mill-1/state", state.encode()))
        await wait_for(lambda: bridge.ingested >= 2, 20, "state changes stored by the MES")
        assert bridge.rejected == 0
    finally:
        await gw.stop(timeout_s=5)
        bridge.stop()


# ------------------------------------------------------------------ TLS
@dataclass
class TlsBroker:
    secured: Secured
    pki: Pki


def _tls(tmp: Path, *extra: str) -> Iterator[TlsBroker]:
    pki = make_pki(tmp / "pki")
    tls_port = free_port()
    out, site_file, port = generate(
        tmp,
        "--tls-cert", str(pki.broker_cert),
        "--tls-key", str(pki.broker_key),
        "--tls-ca", str(pki.ca),
        "--tls-listen", f"127.0.0.1:{tls_port}",
        *extra,
    )  # fmt: skip
    conf = (out / "mosquitto.conf").read_text()
    assert f"listener {port} 127.0.0.1\n" in conf
    with MosquittoConfigured(
        tmp / "mosquitto", out / "mosquitto.conf", port, other_ports=(tls_port,)
    ) as broker:
        yield TlsBroker(
            Secured(broker, out, site_file, read_secrets(out), f"mqtts://127.0.0.1:{tls_port}"),
            pki,
        )


@pytest.fixture
@starts_server("Mosquitto (generated config, TLS)")
def tls_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    yield from _tls(tmp_path)


@pytest.fixture
@starts_server("Mosquitto (generated config, TLS, client certificates)")
def cert_broker(tmp_path: Path) -> Iterator[TlsBroker]:
    yield from _tls(tmp_path, "--require-client-cert")


async def _connects(settings: MqttSettings) -> None:
    client = MqttClient(settings, name=settings.client_id, reconnect=Reconnect.SINGLE_SESSION)
    await client.connect()
    await client.close()


async def test_gateway_and_mes_connect_over_tls_with_the_ca(tls_broker: TlsBroker) -> None:
    s, pki = tls_broker.secured, tls_broker.pki
    assert s.tls_url is not None
    await _connects(s.gateway(LINK, s.tls_url, ca_file=pki.ca, server_name=BROKER_NAME))
    mes = MesSettings(
        site=SITE,
        mqtt_url=s.tls_url,
        mqtt_username=MES,
        mqtt_password=s.secrets.mes,
        mqtt_tls=TlsSettings(ca_file=pki.ca, server_name=BROKER_NAME),
    )
    assert mes.mqtt is not None
    await _connects(mes.mqtt)
    with pytest.raises(ConnectRefused):  # TLS is no way around the logins
        await _connects(
            MqttSettings(url=s.tls_url, tls=TlsSettings(ca_file=pki.ca, server_name=BROKER_NAME))
        )


async def test_a_client_without_a_certificate_is_refused_when_one_is_required(
    cert_broker: TlsBroker,
) -> None:
    s, pki = cert_broker.secured, cert_broker.pki
    assert s.tls_url is not None
    tls: dict[str, Any] = {"ca_file": pki.ca, "server_name": BROKER_NAME}
    with pytest.raises(OSError) as refused:
        await _connects(s.gateway(LINK, s.tls_url, **tls))
    assert not isinstance(refused.value, ConnectRefused), "refused for its login, not its cert"
    mine: dict[str, Any] = {"cert_file": pki.client_cert, "key_file": pki.client_key}
    await _connects(s.gateway(LINK, s.tls_url, **tls, **mine))
