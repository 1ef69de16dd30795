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

from microfactory.mqtt.settings import MqttSettings, check_mqtt_url

from ...units import check_unit
from ..base import AdapterConfigBase

if TYPE_CHECKING:
    from typing import Self

    from ...config import SiteConfig

PLACEHOLDERS = ("machine", "signal")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimestampSpec(_Section):
    """Where the source time is in the payload; without ``path`` the receive time is used."""

    path: str | None = None
    format: Literal["auto", "epoch_s", "epoch_ms", "epoch_us", "epoch_ns", "iso8601"] = "auto"


class FieldSpec(_Section):
    """One JSON field of an object payload mapped to one signal."""

    path: str = Field(description="dotted path into the JSON object, e.g. power.value")
    signal: str
    unit: str | None = None
    unit_path: str | None = Field(default=None, description="path of a unit given in the payload")
    scale: float = 1.0
    offset: float = 0.0

    @field_validator("unit")
    @classmethod
    def _unit(cls, v: str | None, info: ValidationInfo) -> str | None:
        signal = info.data.get("signal")
        return check_unit(signal, v) if signal else v


class ValueSpec(_Section):
    """A payload carrying one value (the signal comes from the topic or ``signal``)."""

    path: str | None = Field(default="value", description="None: the whole payload is the value")
    unit: str | None = None
    unit_path: str | None = "unit"
    scale: float = 1.0
    offset: float = 0.0


class Subscription(_Section):
    topic: str = Field(
        description="MQTT filter; a whole level may be {machine} or {signal} (captured)"
    )
    machine: str | None = None
    signal: str | None = None
    qos: Literal[0, 1, 2] = 1
    format: Literal["json"] = "json"
    timestamp: TimestampSpec = Field(default_factory=TimestampSpec)
    fields: list[FieldSpec] = Field(default_factory=list)
    value: ValueSpec | None = None
    signals: dict[str, str] = Field(
        default_factory=dict,
        description="rename captured {signal} levels, e.g. energy_total: energy_active",
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
    type: Literal["mqtt"] = "mqtt"
    broker: str | None = Field(default=None, description="default: the site's mqtt.url")
    client_id: str | None = Field(default=None, description="default: <mqtt.client_id>-<name>")
    persistent_session: bool = Field(
        default=True, description="broker keeps QoS 1 messages while the gateway is away"
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
    max_payload_bytes: int = Field(default=256 * 1024, ge=16)
    subscriptions: list[Subscription] = Field(min_length=1)

    _url = field_validator("broker")(
        classmethod(lambda cls, v: None if v is None else check_mqtt_url(v))
    )

    _site_broker: MqttSettings = PrivateAttr(default_factory=MqttSettings)

    def machines_referenced(self) -> set[str]:
        return {s.machine for s in self.subscriptions if s.machine}

    def with_site_defaults(self, site: SiteConfig) -> Self:
        """Take the site's shared broker (``mqtt:``) for what this adapter does not set."""
        bound = self.model_copy()
        bound._site_broker = site.mqtt or MqttSettings()
        return bound

    @property
    def site_broker(self) -> MqttSettings:
        """The site's ``mqtt:`` section (its defaults when the file has none)."""
        return self._site_broker
