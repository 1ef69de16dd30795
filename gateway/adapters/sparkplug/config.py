"""Site-config model of the Sparkplug B adapter (``type: sparkplug``)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ...sdk import check_unit
from ..mqtt.broker import BrokerAdapterConfig

if TYPE_CHECKING:
    pass

NAMESPACE = "spBv1.0"
# Sparkplug ids are MQTT topic levels: no separator, no wildcard (spec 3.0, section 4.1).
_ID = re.compile(r"^[^/+#]{1,256}\Z")


def _check_id(value: str, what: str) -> str:
    if not _ID.match(value):
        raise ValueError(f"{what} {value!r}: expected 1-256 characters without '/', '+' or '#'")
    return value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricMapping(_Section):
    """One Sparkplug metric (by its birth name) mapped to one signal of the machine."""

    name: str = Field(
        description="Metric name as in the BIRTH, e.g. `Power/Active` (aliases are resolved)."
    )
    signal: str = Field(description="Signal name the metric's values become.")
    unit: str | None = Field(
        default=None,
        description=(
            "Unit of the metric's values, converted to the signal's canonical unit (checked at "
            "load time); unset: the metric's `engUnit` property from the BIRTH if it has one, "
            "else the signal's canonical unit."
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


def _unique_metrics(metrics: list[MetricMapping]) -> list[MetricMapping]:
    seen: set[str] = set()
    for m in metrics:
        if m.name in seen:
            raise ValueError(f"metric {m.name!r} is mapped twice")
        seen.add(m.name)
    return metrics


class DeviceMapping(_Section):
    """The metrics of one edge node (or one device behind it) mapped to one machine."""

    edge_node: str = Field(description="Edge node id (the topic level after the message type).")
    device: str | None = Field(
        default=None,
        description="Device id behind the edge node; unset: the edge node's own metrics.",
    )
    machine: str = Field(description="Machine the metrics belong to (declared in `machines`).")
    metrics: list[MetricMapping] = Field(
        min_length=1, description="Metrics to read, each onto a signal (at least one)."
    )

    _edge_node = field_validator("edge_node")(
        classmethod(lambda cls, v: _check_id(v, "edge node id"))
    )
    _device = field_validator("device")(
        classmethod(lambda cls, v: None if v is None else _check_id(v, "device id"))
    )
    _metrics = field_validator("metrics")(classmethod(lambda cls, v: _unique_metrics(v)))


class SparkplugAdapterConfig(BrokerAdapterConfig):
    type: Literal["sparkplug"] = Field(default="sparkplug", description="`sparkplug`.")
    group_id: str = Field(description="Sparkplug group id (the topic level after `spBv1.0`).")
    edge_node: str | None = Field(
        default=None,
        description="Edge node id of a single mapping (exclusive with `devices`).",
    )
    device: str | None = Field(
        default=None,
        description=(
            "Device id behind `edge_node` of a single mapping; unset: the edge node's own metrics."
        ),
    )
    machine: str | None = Field(
        default=None, description="Machine of a single mapping (exclusive with `devices`)."
    )
    metrics: list[MetricMapping] = Field(
        default_factory=list,
        description="Metrics of a single mapping, each onto a signal (exclusive with `devices`).",
    )
    devices: list[DeviceMapping] = Field(
        default_factory=list,
        description=(
            "Several mappings, one per edge node or device (exclusive with `edge_node`, "
            "`device`, `machine` and `metrics`)."
        ),
    )
    rebirth: bool = Field(
        default=True,
        description=(
            "Ask an edge node to publish its births again (NCMD `Node Control/Rebirth`) when "
            "its births are missing or out of date: at connect, after a `seq` gap, on an "
            "unknown alias, on data before any birth."
        ),
    )
    rebirth_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="At most one rebirth request per edge node within this many seconds.",
    )
    stale_after_s: float | None = Field(
        default=None,
        gt=0,
        description=(
            "A mapped edge node or device silent this long is stale (a gap is recorded when "
            "it speaks again); unset: only deaths make it offline."
        ),
    )
    max_payload_bytes: int = Field(
        default=1024 * 1024, ge=16, description="Larger messages are dead-lettered unread."
    )

    _group = field_validator("group_id")(classmethod(lambda cls, v: _check_id(v, "group id")))
    _metrics = field_validator("metrics")(classmethod(lambda cls, v: _unique_metrics(v)))

    @model_validator(mode="after")
    def _shape(self) -> SparkplugAdapterConfig:
        single = [
            f
            for f, v in (
                ("edge_node", self.edge_node),
                ("device", self.device),
                ("machine", self.machine),
                ("metrics", self.metrics or None),
            )
            if v is not None
        ]
        if self.devices and single:
            raise ValueError(
                f"give either 'devices' or the single mapping ({', '.join(single)}), not both"
            )
        if not self.devices:
            missing = [f for f in ("edge_node", "machine", "metrics") if f not in single]
            if missing:
                raise ValueError(
                    "a single mapping needs 'edge_node', 'machine' and 'metrics' (missing: "
                    f"{', '.join(missing)}); or give several in 'devices'"
                )
        seen: set[tuple[str, str | None]] = set()
        for i, mapping in enumerate(self.mappings()):
            key = (mapping.edge_node, mapping.device)
            if key in seen:
                where = f"edge node {key[0]!r}" + (f" device {key[1]!r}" if key[1] else "")
                raise ValueError(f"devices[{i}]: {where} is mapped twice")
            seen.add(key)
        return self

    def mappings(self) -> list[DeviceMapping]:
        """Every mapping, the single one (``edge_node``/``machine``/``metrics``) included."""
        if self.devices:
            return list(self.devices)
        assert self.edge_node is not None and self.machine is not None
        return [
            DeviceMapping(
                edge_node=self.edge_node,
                device=self.device,
                machine=self.machine,
                metrics=self.metrics,
            )
        ]

    def edge_nodes(self) -> list[str]:
        """The edge node ids this adapter subscribes to, each once, in config order."""
        return list(dict.fromkeys(m.edge_node for m in self.mappings()))

    def machines_referenced(self) -> set[str]:
        return {m.machine for m in self.mappings()}

    def signals_referenced(self) -> set[tuple[str, str]]:
        return {(m.machine, metric.signal) for m in self.mappings() for metric in m.metrics} | {
            (m.machine, "online") for m in self.mappings()
        }
