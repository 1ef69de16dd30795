"""Broker settings shared by every program that speaks MQTT (pydantic only, no paho).

The settings models validate without importing the client library, so ``config check``
and the MES settings stay light.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator


def check_mqtt_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts", "tcp") or not parts.hostname:
        raise ValueError(f"expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}")
    return url


class MqttSettings(BaseModel):
    """The broker the MQTT adapters and the MES events share unless an adapter names its own."""

    model_config = ConfigDict(extra="forbid")

    url: str = "mqtt://127.0.0.1:1883"
    client_id: str = "microfactory-gateway"
    username: str | None = None
    password: str | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)

    _check_url = field_validator("url")(classmethod(lambda cls, v: check_mqtt_url(v)))
