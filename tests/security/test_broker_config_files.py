"""``microfactory broker config`` without a broker: users and grants from the site config, the
files' text, Mosquitto's password hashes, idempotent re-runs, and the secrets each program
reads (the generated broker itself is run by test_broker_config.py)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from typer.testing import CliRunner

from microfactory import contract
from microfactory.cli.main import app
from microfactory.gateway.broker_config import (
    BrokerConfigError,
    BrokerOptions,
    IdentityError,
    parse_listener,
    plan_identities,
    write_broker_config,
)
from microfactory.gateway.broker_config.credentials import read_secrets
from microfactory.gateway.broker_config.mosquitto import Listener, render_acl
from microfactory.gateway.broker_config.passwords import (
    hash_password,
    parse_password_file,
    verify_password,
)
from microfactory.gateway.config import SiteConfig, load_site_config, parse_site_config
from microfactory.mes.settings import MesSettings
from microfactory.mqtt.settings import MqttSettings

SITE = "sec"
EVENTS = contract.event_subscription(SITE)
CONTEXT = contract.context_subscription(SITE)

# Written by mosquitto_passwd 2.0.11 (`mosquitto_passwd -c -b pw alice secret`).
MOSQUITTO_PASSWD_LINE = (
    "alice:$7$101$iI0CVgp2VWfEcDGt$c1AtVWwo49Oe3GU2opg/jrlzgpBR27UthdX/G+HEfOIIXir/0wgnQ7hW"
    "kjcG926IRc0t+/FENY2mRosuEoVRYw=="
)


def site_data(**extra: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "site": SITE,
        "mqtt": {"url": "mqtt://127.0.0.1:1883", "client_id": "gw"},
        "machines": [{"id": "m1"}, {"id": "m2"}, {"id": "laser-1"}],
        "mes_link": {},
        "adapters": [
            {
                "type": "mqtt",
                "name": "plugs",
                "subscriptions": [
                    {"topic": "plant/{machine}/{signal}", "format": "text", "value": {}},
                    {"topic": "tele/plug-m1/LWT", "machine": "m1", "availability": {}},
                ],
            },
            {
                "type": "sparkplug",
                "name": "spb",
                "group_id": "Workshop",
                "edge_node": "laser-plc",
                "machine": "laser-1",
                "metrics": [{"name": "Laser/State", "signal": "state"}],
            },
            {
                "type": "mqtt",
                "name": "elsewhere",
                "broker": "mqtt://10.0.0.9:1883",
                "subscriptions": [
                    {"topic": "x/{machine}/v", "value": {}, "signal": "power_active"}
                ],
            },
        ],
    }
    data.update(extra)
    return data


def site(**extra: Any) -> SiteConfig:
    return parse_site_config(site_data(**extra), "test site")


def grants(s: SiteConfig) -> dict[str, set[tuple[str, str]]]:
    return {
        i.username: {(g.access, g.topic) for g in i.grants} for i in plan_identities(s).identities
    }


# ------------------------------------------------------------------ who may do what
def test_each_connection_and_device_is_a_user_with_only_its_topics() -> None:
    assert grants(site()) == {
        contract.mes_client_id(SITE): {("read", EVENTS), ("readwrite", CONTEXT)},
        "gw-mes": {("write", EVENTS), ("read", CONTEXT)},
        "gw-plugs": {("read", "plant/+/+"), ("read", "tele/plug-m1/LWT")},
        "gw-spb": {
            ("read", "spBv1.0/Workshop/+/laser-plc"),
            ("read", "spBv1.0/Workshop/+/laser-plc/+"),
            ("write", "spBv1.0/Workshop/NCMD/laser-plc"),
        },
        "machine-m1": {("write", "plant/m1/+"), ("write", "tele/plug-m1/LWT")},
        "machine-m2": {("write", "plant/m2/+")},
        "machine-laser-1": {("write", "plant/laser-1/+")},
        "sparkplug-Workshop-laser-plc": {
            ("write", "spBv1.0/Workshop/NBIRTH/laser-plc"),
            ("write", "spBv1.0/Workshop/NDATA/laser-plc"),
            ("write", "spBv1.0/Workshop/NDEATH/laser-plc"),
            ("write", "spBv1.0/Workshop/DBIRTH/laser-plc/+"),
            ("write", "spBv1.0/Workshop/DDATA/laser-plc/+"),
            ("write", "spBv1.0/Workshop/DDEATH/laser-plc/+"),
            ("read", "spBv1.0/Workshop/NCMD/laser-plc"),
            ("read", "spBv1.0/Workshop/DCMD/laser-plc/+"),
        },
    }


def test_only_the_mes_writes_context_and_only_the_link_writes_events() -> None:
    writers: dict[str, set[str]] = {EVENTS: set(), CONTEXT: set()}
    for identity in plan_identities(site()).identities:
        for g in identity.grants:
            if g.access != "read" and g.topic in writers:
                writers[g.topic].add(identity.username)
            # no wildcard grant may cover the MES topics either
            assert not (g.access != "read" and g.topic.startswith(("#", "+", "microfactory/#")))
    assert writers == {EVENTS: {"gw-mes"}, CONTEXT: {contract.mes_client_id(SITE)}}


def test_the_mes_user_is_the_mes_client_id() -> None:
    assert (
        MesSettings(site=SITE).client_id == contract.mes_client_id(SITE) == "microfactory-mes-sec"
    )


def test_an_adapter_on_another_broker_is_reported_not_given_users() -> None:
    plan = plan_identities(site())
    assert "gw-elsewhere" not in {i.username for i in plan.identities}
    assert any("elsewhere has its own broker mqtt://10.0.0.9:1883" in n for n in plan.notes)


def test_a_link_without_events_gets_no_event_write() -> None:
    assert grants(site(mes_link={"events": False, "client_id": "link-1"}))["link-1"] == {
        ("read", CONTEXT)
    }


def test_a_fixed_machine_on_a_wildcard_topic_is_noted() -> None:
    data = site_data()
    data["adapters"][0]["subscriptions"].append(
        {
            "topic": "tele/+/SENSOR",
            "machine": "m2",
            "fields": [{"path": "P", "signal": "power_active"}],
        }
    )
    plan = plan_identities(parse_site_config(data))
    assert ("write", "tele/+/SENSOR") in {
        (g.access, g.topic) for g in plan.user("machine-m2").grants
    }
    assert any("machine m2 may publish on 'tele/+/SENSOR'" in n for n in plan.notes)


def test_a_name_no_broker_accepts_is_refused_with_its_place() -> None:
    data = site_data()
    data["adapters"][1]["edge_node"] = "laser plc"
    with pytest.raises(IdentityError, match=r"Sparkplug edge node Workshop/laser plc: 'sparkplug"):
        plan_identities(parse_site_config(data))


# ------------------------------------------------------------------ Mosquitto's password hashes
def test_a_hash_from_mosquitto_passwd_verifies() -> None:
    user, hashed = MOSQUITTO_PASSWD_LINE.split(":", 1)
    assert parse_password_file(MOSQUITTO_PASSWD_LINE + "\n") == {user: hashed}
    assert verify_password("secret", hashed)
    assert not verify_password("secreT", hashed)


def test_our_hash_has_mosquittos_shape() -> None:
    salt = bytes(range(12))
    hashed = hash_password("secret", salt=salt)
    _, kind, iterations, b64salt, b64hash = hashed.split("$")
    assert (kind, iterations, b64salt) == ("7", "101", "AAECAwQFBgcICQoL")
    assert len(b64hash) == 88  # 64 bytes
    assert verify_password("secret", hashed) and not verify_password("other", hashed)
    assert hash_password("secret") != hash_password("secret")  # a fresh salt each time
    assert not verify_password("secret", "$6$plain")


# ------------------------------------------------------------------ the files
def _write(tmp: Path, s: SiteConfig | None = None, **opts: Any) -> Any:
    return write_broker_config(
        s or site(), tmp / "broker", BrokerOptions(data_dir=tmp / "data", **opts)
    )


def test_the_config_refuses_anonymous_and_binds_client_ids_on_every_listener(
    tmp_path: Path,
) -> None:
    (tmp_path / "cert.pem").write_text("x")
    (tmp_path / "key.pem").write_text("x")
    (tmp_path / "ca.pem").write_text("x")
    _write(
        tmp_path,
        tls_cert=tmp_path / "cert.pem",
        tls_key=tmp_path / "key.pem",
        tls_ca=tmp_path / "ca.pem",
        require_client_cert=True,
        tls_listen=Listener("", 18883),
    )
    conf = (tmp_path / "broker" / "mosquitto.conf").read_text().splitlines()
    assert "allow_anonymous false" in conf
    assert f"acl_file {tmp_path / 'broker' / 'acl'}" in conf
    assert f"password_file {tmp_path / 'broker' / 'passwd'}" in conf
    assert "listener 1883 127.0.0.1" in conf  # with TLS the plain listener is local only
    assert "listener 18883" in conf
    assert conf.count("use_username_as_clientid true") == 2  # a listener setting in 2.0
    assert "require_certificate true" in conf and f"cafile {tmp_path / 'ca.pem'}" in conf
    assert "persistence true" in conf
    assert "max_queued_messages 120960" in conf  # 3 machines x 240 events/h x 168 h


def test_files_secrets_and_modes(tmp_path: Path) -> None:
    done = _write(tmp_path)
    out = tmp_path / "broker"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["mosquitto.conf", "acl", "passwd", "gateway.env", "mes.env", "devices.csv"]
    )
    for name in ("passwd", "gateway.env", "mes.env", "devices.csv"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o600, name
    secrets = read_secrets(out)
    hashes = parse_password_file((out / "passwd").read_text())
    assert set(hashes) == {i.username for i in done.plan.identities}
    assert secrets.gateway is not None and secrets.mes is not None
    for user in ("gw-mes", "gw-plugs", "gw-spb"):  # the gateway's connections share one
        assert verify_password(secrets.gateway, hashes[user])
    assert verify_password(secrets.mes, hashes[contract.mes_client_id(SITE)])
    assert set(secrets.devices) == {
        "machine-m1",
        "machine-m2",
        "machine-laser-1",
        "sparkplug-Workshop-laser-plc",
    }
    for user, password in secrets.devices.items():
        assert verify_password(password, hashes[user])
    assert len(set(secrets.devices.values()) | {secrets.gateway, secrets.mes}) == 6


def test_a_second_run_keeps_passwords_and_rotate_replaces_them(tmp_path: Path) -> None:
    _write(tmp_path)
    out = tmp_path / "broker"
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    first = read_secrets(out)
    again = _write(tmp_path)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # byte for byte
    assert again.new_passwords == []
    rotated = _write(tmp_path, rotate=True)
    assert sorted(rotated.new_passwords) == sorted(i.username for i in rotated.plan.identities)
    second = read_secrets(out)
    assert second.gateway != first.gateway and second.mes != first.mes
    assert not set(second.devices.values()) & set(first.devices.values())
    hashes = parse_password_file((out / "passwd").read_text())
    assert verify_password(second.mes or "", hashes[contract.mes_client_id(SITE)])


def test_option_errors_name_the_option(tmp_path: Path) -> None:
    with pytest.raises(BrokerConfigError, match="--require-client-cert: give --tls-ca"):
        _write(tmp_path, require_client_cert=True)
    with pytest.raises(BrokerConfigError, match="--tls-key: needed"):
        (tmp_path / "c.pem").write_text("x")
        _write(tmp_path, tls_cert=tmp_path / "c.pem")
    tls_site = site(mqtt={"url": "mqtts://127.0.0.1:8883", "client_id": "gw"})
    with pytest.raises(
        BrokerConfigError, match=r"mqtts://127\.0\.0\.1:8883 \(TLS\): give --tls-cert"
    ):
        _write(tmp_path, tls_site)
    with pytest.raises(BrokerConfigError, match="--listen: expected HOST:PORT"):
        parse_listener("1883", "--listen")
    assert parse_listener("[::1]:1884", "--listen") == Listener("::1", 1884)


# ------------------------------------------------------------------ what the programs read
def _env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def test_gateway_env_makes_each_connection_log_in_as_its_client_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path)
    env = _env_file(tmp_path / "broker" / "gateway.env")
    for name in list(os.environ):
        if name.upper().startswith("MICROFACTORY_"):
            monkeypatch.delenv(name)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site_data()))
    loaded = load_site_config(path)
    assert loaded.mqtt is not None
    assert loaded.mqtt.url == "mqtt://127.0.0.1:1883" and loaded.mqtt.client_id == "gw"  # kept
    assert (
        loaded.mqtt.username_from_client_id
        and loaded.mqtt.password == env["MICROFACTORY_MQTT__PASSWORD"]
    )
    plugs = loaded.adapters[0].connection()  # type: ignore[attr-defined]
    assert (plugs.client_id, plugs.username_from_client_id) == ("gw-plugs", True)
    elsewhere = loaded.adapters[2].connection()  # type: ignore[attr-defined]
    assert not elsewhere.username_from_client_id  # another broker: not its users


def test_mes_env_gives_the_mes_its_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(tmp_path)
    for key, value in _env_file(tmp_path / "broker" / "mes.env").items():
        monkeypatch.setenv(key, value)
    settings = MesSettings(mqtt_url="mqtt://127.0.0.1:1883")
    assert settings.mqtt is not None
    assert settings.mqtt.username == settings.client_id == contract.mes_client_id(SITE)
    assert settings.mqtt.password == read_secrets(tmp_path / "broker").mes


def test_username_from_client_id_and_a_username_are_exclusive() -> None:
    with pytest.raises(ValidationError, match="either username or username_from_client_id"):
        MqttSettings(username="gateway", username_from_client_id=True)


def test_the_command_prints_files_and_users_never_a_password(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site_data()))
    out = tmp_path / "broker"
    args = ["broker", "config", "--config", str(path), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(tmp_path / "data")])
    assert result.exit_code == 0, result.output
    assert f"mosquitto.conf  {out / 'mosquitto.conf'}" in result.output
    assert "gw-plugs" in result.output and "machine-m2" in result.output
    assert "elsewhere has its own broker" in result.output
    secrets = read_secrets(out)
    for secret in [secrets.gateway, secrets.mes, *secrets.devices.values()]:
        assert secret and secret not in result.output
    bad = CliRunner().invoke(app, [*args, "--require-client-cert"])
    assert bad.exit_code == 2 and "--require-client-cert: give --tls-ca" in bad.output


# ------------------------------------------------------------------ the docs tell the truth
def _block_after(text: str, marker: str) -> str:
    """The fenced block right after ``<!-- broker-example: marker -->`` in the docs."""
    after = text.split(f"<!-- broker-example: {marker} -->\n", 1)[1]
    fence, _, rest = after.partition("\n")
    assert fence.startswith("```"), f"no fenced block after the {marker} marker"
    return rest.split("\n```\n", 1)[0] + "\n"


def test_the_acl_shown_in_the_deployment_guide_is_what_the_command_writes() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "deployment.md").read_text()
    shown_site = parse_site_config(yaml.safe_load(_block_after(doc, "site")), "deployment.md")
    assert _block_after(doc, "acl") == render_acl(plan_identities(shown_site))
