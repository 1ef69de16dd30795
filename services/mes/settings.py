"""Settings of the MES, injected into the app factory so tests can build many apps at once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from microfactory.contract import MIN_SIGNING_KEY_BYTES, check_signing_key, mes_client_id
from microfactory.mqtt.settings import (
    MqttSettings,
    TlsSettings,
    check_mqtt_url,
    check_tls_scheme,
    move_url_credentials,
)

DEFAULT_DB_PATH = Path("data") / "mes.sqlite"
MIN_SECRET_KEY_BYTES = MIN_SIGNING_KEY_BYTES  # of the bearer tokens' HMAC key


class ShiftSpec(BaseModel):
    """A named shift, in local time of the site; ``end`` before ``start`` crosses midnight."""

    model_config = ConfigDict(extra="forbid")

    name: str
    start: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")
    end: str = Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")


def _default_shifts() -> list[ShiftSpec]:
    return [
        ShiftSpec(name="early", start="06:00", end="14:00"),
        ShiftSpec(name="late", start="14:00", end="22:00"),
        ShiftSpec(name="night", start="22:00", end="06:00"),
    ]


class MesSettings(BaseSettings):
    """Everything the MES needs to run; env prefix ``MICROFACTORY_MES__``.

    Nested fields take ``__`` in the environment too, e.g. ``MICROFACTORY_MES__MQTT_TLS__CA_FILE``.
    """

    model_config = SettingsConfigDict(
        env_prefix="MICROFACTORY_MES__", env_nested_delimiter="__", extra="forbid"
    )

    db_url: str = Field(default=f"sqlite:///{DEFAULT_DB_PATH}")
    mqtt_url: str | None = Field(
        default=None,
        description="broker of the bridge, mqtt://HOST[:PORT] or mqtts://HOST[:PORT] (TLS); "
        "None = no bridge",
    )
    mqtt_username: str | None = Field(default=None, description="broker user name")
    mqtt_password: str | None = Field(
        default=None, repr=False, description="broker password; prefer the environment"
    )
    mqtt_tls: TlsSettings | None = Field(
        default=None, description="TLS of an mqtts:// broker: CA file, client certificate"
    )
    mqtt_keepalive_s: int = Field(default=30, ge=5, le=3600, description="MQTT keep-alive")
    site: str = "demo"
    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=1, le=65535)
    demo: bool = Field(default=False, description="accept the documented demo passwords")
    secret_key: str | None = Field(
        default=None,
        repr=False,
        description="HMAC key for bearer tokens, at least 32 bytes; unset = generated once and "
        "kept in `<state_dir>/secret_key`",
    )
    state_dir: Path | None = Field(
        default=None,
        description="where the MES keeps its generated secret key; default: the folder of the "
        "SQLite database, else ./data",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, description="larger request bodies are refused with 413"
    )
    tls_cert: Path | None = Field(default=None, description="HTTPS: certificate chain (PEM)")
    tls_key: Path | None = Field(default=None, description="HTTPS: private key (PEM)")
    forwarded_allow_ips: str | None = Field(
        default=None,
        description="addresses of the reverse proxy whose X-Forwarded-For gives the client "
        "address (audit, rate limits), comma-separated; unset: no header is believed",
    )
    token_ttl_s: int = Field(default=12 * 3600, ge=60)
    auth_failures_per_user: int = Field(
        default=5, ge=1, description="failed logins per user name from one address, then 429"
    )
    auth_failures_per_user_total: int = Field(
        default=50, ge=1, description="failed logins per user name from all addresses, then 429"
    )
    auth_failures_per_address: int = Field(
        default=20, ge=1, description="failed logins per client address and window, then 429"
    )
    auth_failure_window_s: float = Field(
        default=60.0, gt=0, le=86400, description="window of the two login-failure limits"
    )
    auth_concurrent_verifications: int = Field(
        default=2, ge=1, le=64, description="scrypt runs at once (16 MiB each); others wait"
    )
    audit_retention_days: int = Field(
        default=365, ge=1, description="audit rows older than this are deleted"
    )
    audit_max_rows: int = Field(
        default=1_000_000, ge=100, description="audit capacity: warning at 80 %, oldest dropped"
    )
    co2e_g_per_kwh: float = Field(default=380.0, ge=0)
    timezone: str = "UTC"
    shifts: list[ShiftSpec] = Field(default_factory=_default_shifts)
    mqtt_client_id: str | None = None
    mqtt_protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1", description="MQTT version of the bridge's persistent session"
    )
    mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, description="MQTT 5 only")
    mqtt_signing_key: str | None = Field(
        default=None,
        repr=False,
        description="for a broker without ACLs: HMAC key shared with the gateways "
        "(`mes_link.signing_key`), at least 32 bytes; set = contexts published signed, "
        "unsigned or badly signed events refused",
    )

    @field_validator("mqtt_signing_key")
    @classmethod
    def _long_signing_key(cls, v: str | None) -> str | None:
        return check_signing_key(v, "MICROFACTORY_MES__MQTT_SIGNING_KEY")

    @field_validator("secret_key")
    @classmethod
    def _long_secret_key(cls, v: str | None) -> str | None:
        # a short (or empty) key lets anyone forge admin tokens offline: refuse to start
        return check_signing_key(
            v,
            "MICROFACTORY_MES__SECRET_KEY",
            "unset it to have one generated in the state directory",
        )

    @model_validator(mode="after")
    def _tls_pair(self) -> MesSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key: give both (HTTPS) or neither (plain HTTP)")
        return self

    @field_validator("mqtt_url")
    @classmethod
    def _mqtt_url(cls, v: str | None) -> str | None:
        return None if v is None else check_mqtt_url(v)

    @model_validator(mode="after")
    def _mqtt_credentials(self) -> MesSettings:
        if self.mqtt_url is None:
            return self
        self.mqtt_url, self.mqtt_username, self.mqtt_password = move_url_credentials(
            self.mqtt_url, self.mqtt_username, self.mqtt_password, "mqtt_url"
        )
        check_tls_scheme(self.mqtt_url, self.mqtt_tls, "mqtt_tls")
        return self

    @property
    def mqtt(self) -> MqttSettings | None:
        """The bridge's broker connection, or None when no ``mqtt_url`` is set."""
        if self.mqtt_url is None:
            return None
        return MqttSettings(
            url=self.mqtt_url,
            client_id=self.client_id,
            username=self.mqtt_username,
            password=self.mqtt_password,
            keepalive_s=self.mqtt_keepalive_s,
            tls=self.mqtt_tls,
        )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as err:
            raise ValueError(f"unknown time zone {value!r}") from err
        return value

    @property
    def client_id(self) -> str:
        """A fixed client id so the broker keeps our session (and queued events) across restarts."""
        return self.mqtt_client_id or mes_client_id(self.site)
