"""The wire contract between the gateway, the MES and anyone else on the wire.

The gateway never imports the MES and the MES never imports the gateway; what crosses
between them (MQTT topics, JSON payloads, the InfluxDB schema, the signal vocabulary) is
defined here once and versioned. An integrator can speak to either side from this module,
or from its description in ``docs/wire-contract.md`` (JSON Schemas of the events in ``docs/mes.md``).

Bump ``CONTRACT_VERSION`` on any incompatible change; additive optional fields do not bump it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

CONTRACT_VERSION = 1
TOPIC_ROOT = f"microfactory/v{CONTRACT_VERSION}"

# --------------------------------------------------------------------------- InfluxDB schema
# One line-protocol schema for every sink. A field keeps its type forever (InfluxDB refuses a
# type change within a shard), so numeric values (booleans as 0.0 / 1.0) always go to ``value``
# (float) and text
# values (machine state, program name) always go to ``text`` (string).
MEASUREMENT_TELEMETRY = "telemetry"
MEASUREMENT_EVENT = "machine_event"
TAG_SITE = "site"
TAG_MACHINE = "machine"
TAG_SIGNAL = "signal"
TAG_UNIT = "unit"
TAG_QUALITY = "quality"
CONTEXT_TAGS = ("order", "batch", "operation", "product")
FIELD_VALUE = "value"
FIELD_TEXT = "text"

Quality = Literal["good", "uncertain", "bad"]


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """One entry of the signal vocabulary: the canonical unit every source is normalised to."""

    name: str
    unit: str
    kind: Literal["gauge", "counter", "text", "boolean"]
    description: str


SIGNALS: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        SignalSpec("state", "", "text", "off | idle | setup | running | fault"),
        SignalSpec("program", "", "text", "current NC program, job or recipe name"),
        SignalSpec("power_active", "W", "gauge", "instantaneous active power"),
        SignalSpec("power_l1", "W", "gauge", "active power, phase L1"),
        SignalSpec("power_l2", "W", "gauge", "active power, phase L2"),
        SignalSpec("power_l3", "W", "gauge", "active power, phase L3"),
        SignalSpec("energy_active", "Wh", "counter", "active energy counter (may reset)"),
        SignalSpec("part_count", "count", "counter", "parts completed (good + scrap)"),
        SignalSpec("good_count", "count", "counter", "good parts completed"),
        SignalSpec("scrap_count", "count", "counter", "scrapped parts"),
        SignalSpec("spindle_speed", "rpm", "gauge", "spindle speed"),
        SignalSpec("laser_power", "W", "gauge", "laser source output power"),
        SignalSpec("feed_rate", "mm/min", "gauge", "axis feed rate"),
        SignalSpec("temperature", "degC", "gauge", "generic temperature"),
        SignalSpec("temperature_spindle", "degC", "gauge", "spindle bearing temperature"),
        SignalSpec("temperature_coolant", "degC", "gauge", "coolant temperature"),
        SignalSpec("temperature_resonator", "degC", "gauge", "laser resonator temperature"),
        SignalSpec("temperature_chiller", "degC", "gauge", "chiller water temperature"),
        SignalSpec("temperature_nozzle", "degC", "gauge", "3D printer nozzle temperature"),
        SignalSpec("temperature_bed", "degC", "gauge", "3D printer bed temperature"),
        SignalSpec("torque", "N*m", "gauge", "tool torque"),
        SignalSpec("voltage_l1", "V", "gauge", "voltage L1-N"),
        SignalSpec("voltage_l2", "V", "gauge", "voltage L2-N"),
        SignalSpec("voltage_l3", "V", "gauge", "voltage L3-N"),
        SignalSpec("current_l1", "A", "gauge", "current, phase L1"),
        SignalSpec("current_l2", "A", "gauge", "current, phase L2"),
        SignalSpec("current_l3", "A", "gauge", "current, phase L3"),
        SignalSpec("power_factor", "", "gauge", "total power factor (-1 to 1)"),
        SignalSpec("frequency", "Hz", "gauge", "supply frequency"),
        SignalSpec(
            "online", "", "boolean", "device reachable: 1, or not: 0 (e.g. from an MQTT LWT)"
        ),
    )
}

MACHINE_STATES = ("off", "idle", "setup", "running", "fault")


# --------------------------------------------------------------------------- MQTT topics
def context_topic(site: str, machine: str) -> str:
    """Retained topic on which the MES publishes what a machine is working on."""
    return f"{TOPIC_ROOT}/{site}/context/{machine}"


def context_subscription(site: str) -> str:
    return f"{TOPIC_ROOT}/{site}/context/+"


def event_topic(site: str, machine: str) -> str:
    """QoS 1 topic on which the gateway publishes machine events for the MES."""
    return f"{TOPIC_ROOT}/{site}/events/{machine}"


def event_subscription(site: str) -> str:
    return f"{TOPIC_ROOT}/{site}/events/+"


# --------------------------------------------------------------------------- payloads
class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    contract_version: int = CONTRACT_VERSION


class MachineContext(_Payload):
    """What a machine is working on, published retained by the MES.

    An empty retained message on the topic (or ``order`` = None) clears the context.
    """

    site: str
    machine: str
    order: str | None = None
    batch: str | None = None
    operation: str | None = None
    operator: str | None = None
    product: str | None = None
    since_ns: int = Field(description="UTC ns when this context became active")


class _Event(_Payload):
    event_id: str = Field(description="stable id: replays with the same id must be ignored")
    site: str
    machine: str
    ts_ns: int = Field(description="UTC ns, source time of the machine")
    order: str | None = None
    batch: str | None = None
    operation: str | None = None
    product: str | None = None


class StateChanged(_Event):
    """A machine entered ``state`` at ``ts_ns``; what it used in the state that just ended.

    ``previous_energy_wh`` is the energy counter difference between ``previous_since_ns`` (or
    ``previous_energy_from_ns``, the first counter reading, when the state began before the
    gateway could read the counter) and ``ts_ns``, corrected for counter resets; None when it
    is not known.
    """

    kind: Literal["state_changed"] = "state_changed"
    state: str
    previous: str | None = None
    previous_since_ns: int | None = Field(
        default=None, description="UTC ns when the previous state began (None: not seen)"
    )
    previous_energy_wh: float | None = Field(
        default=None, description="Wh the machine used in the previous state (None: unknown)"
    )
    previous_energy_from_ns: int | None = Field(
        default=None,
        description="UTC ns from which previous_energy_wh counts when the energy counter was "
        "first read after the previous state began (None: from previous_since_ns)",
    )


class PartCompleted(_Event):
    """One part finished on a machine, with the energy it took on its own.

    ``energy_wh`` is the energy counter difference between the previous part's completion
    (or the start of the run) and this one, corrected for counter resets.
    """

    kind: Literal["part_completed"] = "part_completed"
    part_count: int
    good: bool | None = None
    energy_wh: float | None = None
    cycle_time_s: float | None = None


class GapReported(_Event):
    """The gateway lost a source for a while; data in [start_ns, ts_ns] may be missing."""

    kind: Literal["gap"] = "gap"
    start_ns: int
    reason: str


MachineEvent = Annotated[StateChanged | PartCompleted | GapReported, Field(discriminator="kind")]
