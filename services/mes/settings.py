"""Settings of the MES, injected into the app factory so tests can build many apps at once."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from microfactory.mqtt.settings import (
    MqttSettings,
    TlsSettings,
    check_mqtt_url,
    check_tls_scheme,
    move_url_credentials,
)

DEFAULT_DB_PATH = Path("data") / "mes.sqlite"


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
    secret_key: str = Field(
        default_factory=lambda: secrets.token_urlsafe(32),
        description="HMAC key for bearer tokens; random per process unless set",
    )
    token_ttl_s: int = Field(default=12 * 3600, ge=60)
    co2e_g_per_kwh: float = Field(default=380.0, ge=0)
    timezone: str = "UTC"
    shifts: list[ShiftSpec] = Field(default_factory=_default_shifts)
    mqtt_client_id: str | None = None
    mqtt_protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1", description="MQTT version of the bridge's persistent session"
    )
    mqtt_session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0, description="MQTT 5 only")

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
        return self.mqtt_client_id or f"microfactory-mes-{self.site}"
