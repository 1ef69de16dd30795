"""What every adapter that listens on an MQTT broker configures the same way: which broker.

The MQTT adapter and the Sparkplug B adapter (and any integrator's adapter on a broker)
subclass :class:`BrokerAdapterConfig`: an adapter uses its own ``broker`` with its own
credentials and TLS, or the site's shared ``mqtt:`` section for what it does not set.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, PrivateAttr, field_validator, model_validator

from microfactory.mqtt.settings import (
    MqttSettings,
    TlsSettings,
    check_mqtt_url,
    check_tls_scheme,
    move_url_credentials,
)

from ...sdk import AdapterConfigBase

if TYPE_CHECKING:
    from typing import Self

    from ...config import SiteConfig


class BrokerAdapterConfig(AdapterConfigBase):
    """The broker fields of an adapter; its ``type`` and mapping come from the subclass."""

    name: str = Field(description="Adapter name, unique in the file; part of the client id.")
    broker: str | None = Field(
        default=None,
        description=(
            "This adapter's own broker URL; unset: the site's `mqtt.url` "
            "(`mqtt.username`/`password`/`tls` are only used with the site's broker)."
        ),
    )
    username: str | None = Field(
        default=None,
        description="Broker user of this adapter; unset: `mqtt.username` when the adapter "
        "uses the site's broker.",
    )
    password: str | None = Field(
        default=None,
        repr=False,
        description="Broker password of this adapter; unset: `mqtt.password` when the adapter "
        "uses the site's broker.",
    )
    tls: TlsSettings | None = Field(
        default=None,
        description="TLS of this adapter's `mqtts://` broker; unset: `mqtt.tls` when the "
        "adapter uses the site's broker.",
    )
    client_id: str | None = Field(
        default=None,
        description=(
            "Client id; unset: `<mqtt.client_id>-<name>`. Keep it stable, the "
            "broker keys the persistent session on it."
        ),
    )
    persistent_session: bool = Field(
        default=True,
        description=(
            "Connect with clean session off, so the broker keeps QoS 1 messages "
            "while the gateway is away (up to its queue limit)."
        ),
    )

    _url = field_validator("broker")(
        classmethod(lambda cls, v: None if v is None else check_mqtt_url(v))
    )

    _site_broker: MqttSettings = PrivateAttr(default_factory=MqttSettings)

    @model_validator(mode="after")
    def _own_broker(self) -> Self:
        if self.broker is not None:
            self.broker, self.username, self.password = move_url_credentials(
                self.broker, self.username, self.password, f"adapters.{self.name}.broker"
            )
            check_tls_scheme(self.broker, self.tls, "tls")
        return self

    def with_site_defaults(self, site: SiteConfig) -> Self:
        """Take the site's shared broker (``mqtt:``) for what this adapter does not set."""
        bound = self.model_copy()
        bound._site_broker = site.mqtt or MqttSettings()
        if self.broker is None:
            check_tls_scheme(bound._site_broker.url, self.tls, f"adapters ({self.name}): tls")
        return bound

    @property
    def site_broker(self) -> MqttSettings:
        """The site's ``mqtt:`` section (its defaults when the file has none)."""
        return self._site_broker

    def connection(self) -> MqttSettings:
        """The broker this adapter talks to: its own, or the site's, with what it overrides.

        With its own ``broker`` only its own credentials and TLS apply; on the site's broker,
        what the adapter does not set comes from ``mqtt:``.
        """
        site = self._site_broker
        client_id = self.client_id or f"{site.client_id}-{self.name}"
        if self.broker is not None:
            return MqttSettings(
                url=self.broker,
                client_id=client_id,
                username=self.username,
                password=self.password,
                keepalive_s=site.keepalive_s,
                tls=self.tls,
            )
        return site.model_copy(
            update={
                "client_id": client_id,
                "username": self.username if self.username is not None else site.username,
                # an adapter with its own user logs in as that user, not as its client id
                "username_from_client_id": site.username_from_client_id and self.username is None,
                "password": self.password if self.username is not None else site.password,
                "tls": self.tls if self.tls is not None else site.tls,
            }
        )
