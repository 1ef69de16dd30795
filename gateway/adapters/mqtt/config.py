"""Site-config model of the MQTT adapter (``type: mqtt``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from microfactory.mqtt.settings import (
    MqttSettings,
    TlsSettings,
    check_mqtt_url,
    check_tls_scheme,
    move_url_credentials,
)

from ...sdk import AdapterConfigBase, check_unit

if TYPE_CHECKING:
    from typing import Self

    from ...config import SiteConfig

PLACEHOLDERS = ("machine", "signal")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimestampSpec(_Section):
    """Where the source time is in the payload; without ``path`` the receive time is used."""

    path: str | None = Field(
        default=None, description="Dotted path of the time in the payload; unset: receive time."
    )
    format: Literal["auto", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "iso8601"] = Field(
        default="auto",
        description=(
            "`epoch_s`/`_ms`/`_us`/`_ns` numbers, `iso8601` text with a time zone, "
            "or `auto` (numbers by magnitude, text as ISO 8601)."
        ),
    )


class FieldSpec(_Section):
    """One JSON field of an object payload mapped to one signal."""

    path: str = Field(
        description=(
            "Dotted path into the JSON object, e.g. `power.value`; digits index "
            "arrays (`phases.0`). A missing field is skipped."
        )
    )
    signal: str = Field(description="Signal name.")
    unit: str | None = Field(
        default=None,
        description="Unit of the value, converted to the signal's canonical unit (checked at load time).",
    )
    unit_path: str | None = Field(
        default=None,
        description=(
            "Path of a unit given in the payload; wins over `unit` when present and"
            " text (checked per message: an unconvertible unit is dead-lettered)."
        ),
    )
    scale: float = Field(
        default=1.0, description="Multiply numeric values (before unit conversion)."
    )
    offset: float = Field(default=0.0, description="Add to numeric values after `scale`.")

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v


class ValueSpec(_Section):
    """A payload carrying one value (the signal comes from the topic or ``signal``)."""

    path: str | None = Field(
        default="value",
        description=(
            "Dotted path of the value; `null`: the whole payload is the value (then"
            " the receive time is used)."
        ),
    )
    unit: str | None = Field(default=None, description="Unit when the payload gives none.")
    unit_path: str | None = Field(
        default="unit",
        description="Path of a unit in the payload; wins over `unit` when present and text.",
    )
    scale: float = Field(
        default=1.0, description="Multiply numeric values (before unit conversion)."
    )
    offset: float = Field(default=0.0, description="Add to numeric values after `scale`.")


class Subscription(_Section):
    topic: str = Field(
        description=(
            "MQTT topic filter with `+`/`#` wildcards; a whole level may be "
            "`{machine}` or `{signal}`, which matches like `+` and captures the "
            "level."
        )
    )
    machine: str | None = Field(
        default=None,
        description=(
            "Machine of every message on this topic; or use a `{machine}` level "
            "(exactly one of the two)."
        ),
    )
    signal: str | None = Field(
        default=None,
        description=(
            "For `value` subscriptions: the signal; or use a `{signal}` level "
            "(exactly one of the two)."
        ),
    )
    qos: Literal[0, 1, 2] = Field(
        default=1,
        description=(
            "Subscription QoS. With 1 or 2 the PUBACK is sent only once the samples"
            " are in the spool."
        ),
    )
    format: Literal["json"] = Field(
        default="json", description="Payload format; only `json` today."
    )
    timestamp: TimestampSpec = Field(
        default_factory=TimestampSpec, description="Where the source time is."
    )
    fields: list[FieldSpec] = Field(
        default_factory=list, description="Object payload: one entry per JSON field to read."
    )
    value: ValueSpec | None = Field(
        default=None, description="One value per message (exclusive with `fields`)."
    )
    signals: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Rename captured `{signal}` levels, e.g. `energy_total: energy_active`;"
            " levels not listed are used as they are."
        ),
    )

    @field_validator("topic")
    @classmethod
    def _topic(cls, v: str) -> str:
        if not v or len(v.encode()) > 65535:
            raise ValueError("expected a non-empty MQTT topic filter")
        levels = v.split("/")
        for i, level in enumerate(levels):
            names = _PLACEHOLDER.findall(level)
            if names and level != "{" + names[0] + "}":
                raise ValueError(f"placeholder must fill a whole topic level, got level {level!r}")
            for name in names:
                if name not in PLACEHOLDERS:
                    raise ValueError(
                        f"unknown placeholder {{{name}}} (expected {{machine}} or {{signal}})"
                    )
            if ("#" in level and (level != "#" or i != len(levels) - 1)) or (
                "+" in level and level != "+"
            ):
                raise ValueError(f"invalid wildcard in topic level {level!r}")
        for name in PLACEHOLDERS:
            if v.count("{" + name + "}") > 1:
                raise ValueError(f"placeholder {{{name}}} appears more than once")
        return v

    @model_validator(mode="after")
    def _shape(self) -> Subscription:
        has_machine = "{machine}" in self.topic
        if has_machine == (self.machine is not None):
            raise ValueError(
                f"topic {self.topic!r}: give the machine either as 'machine' or as a {{machine}} "
                "topic level (exactly one of them)"
            )
        if bool(self.fields) == (self.value is not None):
            raise ValueError(
                f"topic {self.topic!r}: give either 'fields' (JSON object payload) "
                "or 'value' (one value per message), not both or neither"
            )
        if self.value is not None and ("{signal}" in self.topic) == (self.signal is not None):
            raise ValueError(
                f"topic {self.topic!r}: a 'value' subscription needs its signal either as "
                "'signal' or as a {signal} topic level (exactly one of them)"
            )
        return self

    @property
    def filter(self) -> str:
        return _PLACEHOLDER.sub("+", self.topic)


class MqttAdapterConfig(AdapterConfigBase):
    type: Literal["mqtt"] = Field(default="mqtt", description="`mqtt`.")
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
    protocol: Literal["3.1.1", "5"] = Field(
        default="3.1.1",
        description=(
            "MQTT version; with 5 the broker may keep receive_maximum messages in flight to "
            "the gateway (3.1.1 leaves that to the broker's config, Mosquitto: 20)"
        ),
    )
    receive_maximum: int = Field(
        default=10_000, ge=1, le=65535, description="MQTT 5: unacknowledged messages in flight"
    )
    session_expiry_s: int = Field(
        default=7 * 86400,
        ge=0,
        le=2**32 - 1,
        description="MQTT 5: how long the broker keeps "
        "the session (and queues messages) while the gateway is away",
    )
    max_payload_bytes: int = Field(
        default=256 * 1024, ge=16, description="Larger messages are dead-lettered unread."
    )
    subscriptions: list[Subscription] = Field(
        min_length=1, description="Topic filters and how to read their payloads (at least one)."
    )

    _url = field_validator("broker")(
        classmethod(lambda cls, v: None if v is None else check_mqtt_url(v))
    )

    _site_broker: MqttSettings = PrivateAttr(default_factory=MqttSettings)

    @model_validator(mode="after")
    def _own_broker(self) -> MqttAdapterConfig:
        if self.broker is not None:
            self.broker, self.username, self.password = move_url_credentials(
                self.broker, self.username, self.password, f"adapters.{self.name}.broker"
            )
            check_tls_scheme(self.broker, self.tls, "tls")
        return self

    def machines_referenced(self) -> set[str]:
        return {s.machine for s in self.subscriptions if s.machine}

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
                "password": self.password if self.username is not None else site.password,
                "tls": self.tls if self.tls is not None else site.tls,
            }
        )
