"""Broker settings shared by every program that speaks MQTT (pydantic only, no paho).

One URL grammar for the gateway, the MES and the simulators: ``mqtt://HOST[:PORT]`` (plain,
1883), ``mqtts://HOST[:PORT]`` (TLS, 8883); ``tcp://`` is read as ``mqtt://`` because site
configs already use it. Credentials are fields, not part of the URL: a URL that still carries
``user:password@`` keeps working, its credentials are moved into the fields when it is
validated (with one warning), so no URL kept by a model, and none logged, holds a secret.

The models validate without importing the client library, so ``config check`` and the MES
settings stay light; :mod:`microfactory.mqtt.client` turns them into a connection.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

log = logging.getLogger(__name__)

DEFAULT_PORTS: Final = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883}
URL_GRAMMAR: Final = "mqtt://HOST[:PORT] or mqtts://HOST[:PORT]"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """Where a broker listens, read from its URL; ``str()`` gives the URL without userinfo."""

    host: str
    port: int
    tls: bool

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class UrlParts:
    """A broker URL taken apart: the address, and the credentials it carried (if any)."""

    address: BrokerAddress
    username: str | None
    password: str | None


def split_mqtt_url(url: str) -> UrlParts:
    """Parse a broker URL of the one grammar; ValueError says what is wrong (never the secret)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise ValueError(f"expected {URL_GRAMMAR}, got {redact_url(url)!r} (bad port)") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"expected {URL_GRAMMAR}, got {redact_url(url)!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"expected {URL_GRAMMAR}, got {redact_url(url)!r} (a broker URL has no path or query)"
        )
    address = BrokerAddress(
        parts.hostname, port or DEFAULT_PORTS[parts.scheme], parts.scheme == "mqtts"
    )
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return UrlParts(address, username or None, password)


def parse_mqtt_url(url: str) -> BrokerAddress:
    """The broker address of a URL of the one grammar (credentials, if any, are dropped)."""
    return split_mqtt_url(url).address


def check_mqtt_url(url: str) -> str:
    """Validate a broker URL; return it unchanged (for validators that keep the text)."""
    split_mqtt_url(url)
    return url


def redact_url(url: str) -> str:
    """The URL with any ``user:password@`` removed: what may appear in a log or an error."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    return f"{scheme}://{netloc.rpartition('@')[2]}{slash}{tail}"


def move_url_credentials(
    url: str, username: str | None, password: str | None, where: str
) -> tuple[str, str | None, str | None]:
    """Strip credentials from ``url`` into the fields (fields win); warn once if there were any.

    ``where`` names the setting in the warning (``mqtt.url``, ``adapters.mqtt-in.broker``).
    """
    parts = split_mqtt_url(url)
    if parts.username is None and parts.password is None and "@" not in url.partition("//")[2]:
        return url, username, password
    clean = str(parts.address)
    if username is None:
        log.warning(
            "%s: credentials in the URL are deprecated; using them as username/password "
            "(write url: %s and set username and password instead)",
            where,
            clean,
        )
        return clean, parts.username, parts.password if password is None else password
    log.warning(
        "%s: credentials in the URL are ignored because username is set (write url: %s)",
        where,
        clean,
    )
    return clean, username, password


class TlsSettings(BaseModel):
    """TLS towards the broker (``mqtts://``): whom to trust and who we are.

    Without ``ca_file`` the system's trusted CAs are used. Files are checked when the
    settings are read, so a wrong path is a config error, not a connect failure at 3 a.m.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the broker's certificate; "
        "unset: the system's trusted CAs.",
    )
    cert_file: Path | None = Field(
        default=None,
        description="PEM client certificate, for a broker that requires one "
        "(Mosquitto `require_certificate true`).",
    )
    key_file: Path | None = Field(
        default=None,
        description="PEM private key of `cert_file`; unset: the key is in `cert_file`.",
    )
    server_name: str | None = Field(
        default=None,
        description="Name to send (SNI) and check in the broker's certificate when it differs "
        "from the URL's host, e.g. when connecting by IP address.",
    )
    insecure: bool = Field(
        default=False,
        description="`true` skips the check of the broker's certificate and name (testing "
        "only; a warning is logged when connecting).",
    )

    @field_validator("ca_file", "cert_file", "key_file")
    @classmethod
    def _exists(cls, v: Path | None, info: ValidationInfo) -> Path | None:
        if v is not None and not v.is_file():
            raise ValueError(f"{info.field_name}: no such file {str(v)!r}")
        return v

    @field_validator("server_name")
    @classmethod
    def _name(cls, v: str | None) -> str | None:
        if v is not None and (not v.strip() or any(c in v for c in "/:@ ")):
            raise ValueError(f"expected a host name for the certificate check, got {v!r}")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> TlsSettings:
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file is set but cert_file is not: give the client certificate")
        return self


def check_tls_scheme(url: str, tls: TlsSettings | None, where: str) -> None:
    """A TLS block only makes sense with ``mqtts://``: refuse it on a plain URL."""
    if tls is not None and not parse_mqtt_url(url).tls:
        raise ValueError(
            f"{where}: a 'tls' block needs an mqtts:// URL, got {redact_url(url)!r} "
            "(use mqtts://HOST[:PORT], port 8883 by default)"
        )


class MqttSettings(BaseModel):
    """One broker connection: where (``url``), who (client id, credentials) and TLS.

    The site's ``mqtt:`` section is one; the MQTT adapters and the MES events share it unless
    an adapter names its own broker. The MES and the simulators build one from their settings.
    """

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="`mqtt://HOST[:PORT]` (1883) or `mqtts://HOST[:PORT]` (TLS, 8883); "
        "credentials go in `username`/`password`, not in the URL.",
    )
    client_id: str = Field(
        default="microfactory-gateway",
        description=(
            "Base client id; each MQTT adapter connects as `<client_id>-<adapter "
            "name>`, the MES link as `<client_id>-mes`. Keep it stable: the broker "
            "keeps persistent sessions by client id."
        ),
    )
    username: str | None = Field(
        default=None, description="Broker user (used by adapters without their own `broker`)."
    )
    password: str | None = Field(
        default=None,
        repr=False,
        description="Broker password; prefer `MICROFACTORY_MQTT__PASSWORD`.",
    )
    username_from_client_id: bool = Field(
        default=False,
        description="Connect as username = this connection's client id (each MQTT adapter "
        "and the MES link its own), with `password`: what `microfactory broker config` "
        "generates. Exclusive with `username`.",
    )
    keepalive_s: int = Field(
        default=30,
        ge=5,
        le=3600,
        description="MQTT keep-alive in seconds, of the MQTT adapters and the MES link.",
    )
    tls: TlsSettings | None = Field(
        default=None,
        description="TLS of an `mqtts://` broker: CA, server name, client certificate "
        "(see `mqtt.tls`).",
    )

    _check_url = field_validator("url")(classmethod(lambda cls, v: check_mqtt_url(v)))

    @model_validator(mode="after")
    def _credentials(self) -> MqttSettings:
        self.url, self.username, self.password = move_url_credentials(
            self.url, self.username, self.password, "mqtt.url"
        )
        check_tls_scheme(self.url, self.tls, "mqtt")
        if self.username_from_client_id and self.username is not None:
            raise ValueError(
                "mqtt: give either username or username_from_client_id: true (each "
                "connection logs in as its client id), not both"
            )
        return self

    @property
    def address(self) -> BrokerAddress:
        return parse_mqtt_url(self.url)
