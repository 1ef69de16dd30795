"""Settings of the MES, injected into the app factory so tests can build many apps at once."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

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
    """Everything the MES needs to run; env prefix ``MICROFACTORY_MES__``."""

    model_config = SettingsConfigDict(env_prefix="MICROFACTORY_MES__", extra="forbid")

    db_url: str = Field(default=f"sqlite:///{DEFAULT_DB_PATH}")
    mqtt_url: str | None = Field(default=None, description="mqtt://host:port; None = no bridge")
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
