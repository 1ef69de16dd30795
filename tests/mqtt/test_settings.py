"""The one broker URL grammar and the TLS block: what is accepted, and the exact refusals."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import pytest
from pydantic import ValidationError

from microfactory.gateway.config import parse_site_config
from microfactory.gateway.errors import ConfigError
from microfactory.mes.settings import MesSettings
from microfactory.mqtt.settings import (
    BrokerAddress,
    MqttSettings,
    TlsSettings,
    parse_mqtt_url,
    redact_url,
)


def _error(exc: pytest.ExceptionInfo[ValidationError]) -> str:
    errors = exc.value.errors()
    assert len(errors) == 1, errors
    return str(errors[0]["msg"]).removeprefix("Value error, ")


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("mqtt://broker", BrokerAddress("broker", 1883, tls=False)),
        ("mqtt://broker:1884", BrokerAddress("broker", 1884, tls=False)),
        ("mqtts://broker", BrokerAddress("broker", 8883, tls=True)),
        ("mqtts://10.0.0.5:18883", BrokerAddress("10.0.0.5", 18883, tls=True)),
        ("tcp://broker", BrokerAddress("broker", 1883, tls=False)),  # configs in the field
        ("mqtt://broker:1883/", BrokerAddress("broker", 1883, tls=False)),
    ],
)
def test_the_one_url_grammar(url: str, address: BrokerAddress) -> None:
    assert parse_mqtt_url(url) == address
    assert MqttSettings(url=url).address == address


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "http://broker",
            "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'http://broker'",
        ),
        ("broker:1883", "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'broker:1883'"),
        ("mqtt://", "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'mqtt://'"),
        (
            "mqtt://broker:99999",
            "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'mqtt://broker:99999' "
            "(bad port)",
        ),
        (
            "mqtt://broker/topic",
            "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'mqtt://broker/topic' "
            "(a broker URL has no path or query)",
        ),
        (
            "ws://alice:s3cret@broker",
            "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'ws://broker'",
        ),
    ],
)
def test_bad_urls_are_refused_in_words(url: str, message: str) -> None:
    with pytest.raises(ValidationError) as exc:
        MqttSettings(url=url)
    assert _error(exc) == message
    with pytest.raises(ConfigError) as config_exc:
        parse_site_config({"machines": [{"id": "m1"}], "mqtt": {"url": url}}, "site")
    assert config_exc.value.problems == [f"mqtt.url: {message}"]


def test_credentials_in_the_url_move_into_the_fields_with_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        s = MqttSettings(url="mqtts://alice:s%40cret@broker:8884")
    assert (s.url, s.username, s.password) == ("mqtts://broker:8884", "alice", "s@cret")
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1
    assert "credentials in the URL" in warnings[0] and "mqtts://broker:8884" in warnings[0]
    assert "cret" not in warnings[0]
    assert "cret" not in repr(s)


def test_fields_win_over_credentials_in_the_url(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        s = MqttSettings(url="mqtt://old:pw@broker", username="new", password="fresh")
    assert (s.url, s.username, s.password) == ("mqtt://broker:1883", "new", "fresh")
    assert "ignored" in caplog.records[0].getMessage()


def test_redact_url() -> None:
    assert redact_url("mqtt://u:p@host:1/") == "mqtt://host:1/"
    assert redact_url("mqtt://host") == "mqtt://host"


def test_tls_block_needs_mqtts() -> None:
    with pytest.raises(ValidationError) as exc:
        MqttSettings(url="mqtt://broker", tls=TlsSettings())
    assert _error(exc) == (
        "mqtt: a 'tls' block needs an mqtts:// URL, got 'mqtt://broker' "
        "(use mqtts://HOST[:PORT], port 8883 by default)"
    )


@pytest.mark.parametrize("field", ["ca_file", "cert_file", "key_file"])
def test_tls_files_must_exist(tmp_path: Path, field: str) -> None:
    missing = tmp_path / "nope.pem"
    cert = tmp_path / "client.pem"
    cert.write_text("x")
    values: dict[str, Path] = {field: missing}
    if field == "key_file":
        values["cert_file"] = cert
    with pytest.raises(ValidationError) as exc:
        TlsSettings(**values)
    assert exc.value.errors()[0]["loc"] == (field,)
    assert _error(exc) == f"{field}: no such file {str(missing)!r}"


def test_key_without_certificate_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "client.key"
    key.write_text("x")
    with pytest.raises(ValidationError) as exc:
        TlsSettings(key_file=key)
    assert _error(exc) == "key_file is set but cert_file is not: give the client certificate"


def test_insecure_only_when_explicit() -> None:
    assert TlsSettings().insecure is False
    with pytest.raises(ValidationError):
        TlsSettings(insecure="maybe")


def _site(mqtt: Mapping[str, object] | None, adapter: Mapping[str, object]) -> dict[str, object]:
    data: dict[str, object] = {
        "machines": [{"id": "m1"}],
        "adapters": [
            {
                "type": "mqtt",
                "name": "mqtt-in",
                "subscriptions": [{"topic": "t/{signal}", "machine": "m1", "value": {}}],
                **adapter,
            }
        ],
    }
    if mqtt is not None:
        data["mqtt"] = mqtt
    return data


def test_site_config_errors_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_site_config(
            _site({"url": "mqtts://b", "tls": {"ca_file": str(tmp_path / "ca.pem")}}, {}), "site"
        )
    assert exc.value.problems == [f"mqtt.tls.ca_file: ca_file: no such file '{tmp_path}/ca.pem'"]
    with pytest.raises(ConfigError) as exc:
        parse_site_config(_site({"url": "mqtt://b"}, {"tls": {}}), "site")
    assert exc.value.problems == [
        "adapters (mqtt-in): tls: a 'tls' block needs an mqtts:// URL, got 'mqtt://b' "
        "(use mqtts://HOST[:PORT], port 8883 by default)"
    ]


def test_adapter_connection_own_broker_or_the_site_s(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    site = {"url": "mqtts://site", "username": "gw", "password": "pw", "tls": {"ca_file": str(ca)}}
    shared = parse_site_config(_site(site, {}), "s").adapters[0].connection()  # type: ignore[attr-defined]
    assert (shared.url, shared.username, shared.password) == ("mqtts://site", "gw", "pw")
    assert shared.tls is not None and shared.tls.ca_file == ca
    assert shared.client_id == "microfactory-gateway-mqtt-in"

    own = parse_site_config(_site(site, {"broker": "mqtt://me:x@other:1884"}), "s")
    conn = own.adapters[0].connection()  # type: ignore[attr-defined]
    # its own broker: its own credentials (moved out of the URL), none of the site's TLS
    assert (conn.url, conn.username, conn.password, conn.tls) == (
        "mqtt://other:1884",
        "me",
        "x",
        None,
    )


def test_existing_gateway_configs_keep_their_meaning() -> None:
    site = parse_site_config(_site({"url": "tcp://b:1884", "username": "u"}, {}), "s")
    assert site.mqtt is not None
    assert (site.mqtt.url, site.mqtt.username, site.mqtt.keepalive_s) == ("tcp://b:1884", "u", 30)


def test_mes_broker_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    monkeypatch.setenv("MICROFACTORY_MES__MQTT_URL", "mqtts://broker")
    monkeypatch.setenv("MICROFACTORY_MES__MQTT_USERNAME", "mes")
    monkeypatch.setenv("MICROFACTORY_MES__MQTT_PASSWORD", "pw")
    monkeypatch.setenv("MICROFACTORY_MES__MQTT_TLS__CA_FILE", str(ca))
    monkeypatch.setenv("MICROFACTORY_MES__MQTT_TLS__SERVER_NAME", "broker.lan")
    broker = MesSettings(site="w1").mqtt
    assert broker is not None
    assert (broker.url, broker.username, broker.password) == ("mqtts://broker", "mes", "pw")
    assert broker.tls == TlsSettings(ca_file=ca, server_name="broker.lan")
    assert broker.client_id == "microfactory-mes-w1"


def test_mes_url_credentials_move_and_tls_needs_mqtts() -> None:
    s = MesSettings(mqtt_url="mqtt://mes:pw@broker:1884")
    assert (s.mqtt_url, s.mqtt_username, s.mqtt_password) == ("mqtt://broker:1884", "mes", "pw")
    with pytest.raises(ValidationError) as exc:
        MesSettings(mqtt_url="mqtt://broker", mqtt_tls=TlsSettings())
    assert "mqtt_tls: a 'tls' block needs an mqtts:// URL" in _error(exc)
    with pytest.raises(ValidationError) as exc:
        MesSettings(mqtt_url="mqtts://")
    assert _error(exc) == "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got 'mqtts://'"
