"""The virtual workshop: machine models on one simulated clock, each behind its own protocol.

The workshop owns the only loop: every tick it advances all models to the same simulated
instant, hands what happened to the protocol faces and to the ground-truth recorder, and lets
the meter sum the machines. The simulators know nothing of the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field

from .clock import SimClock
from .machines import DEFAULT_MACHINES, METER_ID
from .model import (
    NS_PER_MS,
    Event,
    MachineModel,
    MachineSnapshot,
    MachineSpec,
    MeterModel,
    MeterSnapshot,
    PartCompleted,
    StateChanged,
    energy_units_to_wh,
)
from .mqtt_machine import MqttLink, MqttMachine, MqttMeter, assembly_topic, printer_topic
from .opcua_machine import OpcUaMachineServer
from .truth import TruthRecorder

Protocol = Literal["opcua", "mqtt"]
PROTOCOL_OF_KIND: Final[dict[str, Protocol]] = {
    "cnc_mill": "opcua",
    "laser_cutter": "opcua",
    "printer_3d": "mqtt",
    "assembly_station": "mqtt",
    "energy_meter": "mqtt",
}

log = logging.getLogger(__name__)


class WorkshopSettings(BaseModel):
    """How to run the virtual workshop; every default gives the standard demo."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    speed: float = Field(default=1.0, gt=0, description="simulated seconds per wall second")
    mqtt_url: str | None = Field(
        default="mqtt://127.0.0.1:1883", description="None runs the MQTT machines silently"
    )
    opcua_host: str = "127.0.0.1"
    opcua_ports: dict[str, int] = Field(
        default_factory=lambda: {"mill-1": 4840, "laser-1": 4841},
        description="machine id -> TCP port; 0 picks a free port",
    )
    truth_dir: Path | None = None
    power_loss_probability: float = Field(
        default=0.01, ge=0, description="expected power losses per machine per simulated hour"
    )
    tick_s: float = Field(default=0.1, gt=0, description="wall seconds between model steps")
    telemetry_interval_s: float = Field(default=1.0, gt=0, description="simulated seconds")
    min_publish_interval_s: float = Field(
        default=0.2, ge=0, description="wall-time floor between periodic MQTT samples"
    )
    start_ns: int | None = Field(default=None, description="simulated origin, UTC ns; None = now")


@dataclass(frozen=True, slots=True)
class MachineInfo:
    machine_id: str
    kind: str
    protocol: Protocol
    address: str  # OPC UA endpoint or MQTT topic (filter)


class Workshop:
    """Five machines that behave like real ones and speak real protocols."""

    def __init__(
        self,
        settings: WorkshopSettings | None = None,
        *,
        specs: Sequence[MachineSpec] = DEFAULT_MACHINES,
        meter_id: str = METER_ID,
    ) -> None:
        self.settings = settings or WorkshopSettings()
        self._specs = tuple(specs)
        self._meter_id = meter_id
        self._opcua: dict[str, OpcUaMachineServer] = {}
        self._mqtt: dict[str, MqttMachine] = {}
        self._links: list[MqttLink] = []
        self._meter_pub: MqttMeter | None = None
        self._models: dict[str, MachineModel] = {}
        self._meter: MeterModel | None = None
        self._clock: SimClock | None = None
        self._truth: TruthRecorder | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self.tick_errors = 0
        run_tag = uuid.uuid4().hex[:6]
        s = self.settings
        for spec in self._specs:
            protocol = PROTOCOL_OF_KIND.get(spec.kind)
            if protocol == "opcua":
                self._opcua[spec.machine_id] = OpcUaMachineServer(
                    machine_id=spec.machine_id,
                    kind=spec.kind,
                    host=s.opcua_host,
                    port=s.opcua_ports.get(spec.machine_id, 0),
                )
            elif protocol == "mqtt" and s.mqtt_url is not None:
                link = MqttLink(url=s.mqtt_url, client_id=f"sim-{spec.machine_id}-{run_tag}")
                self._links.append(link)
                self._mqtt[spec.machine_id] = MqttMachine(
                    machine_id=spec.machine_id,
                    kind=spec.kind,
                    link=link,
                    telemetry_interval_s=s.telemetry_interval_s,
                    min_wall_interval_s=s.min_publish_interval_s,
                )
            elif protocol is None:
                raise ValueError(f"{spec.machine_id}: unknown machine kind {spec.kind!r}")
        if s.mqtt_url is not None:
            link = MqttLink(url=s.mqtt_url, client_id=f"sim-{meter_id}-{run_tag}")
            self._links.append(link)
            self._meter_pub = MqttMeter(
                machine_id=meter_id,
                link=link,
                telemetry_interval_s=s.telemetry_interval_s,
                min_wall_interval_s=s.min_publish_interval_s,
            )

    # ------------------------------------------------------------------ introspection
    @property
    def opcua_endpoints(self) -> dict[str, str]:
        return {mid: srv.endpoint for mid, srv in self._opcua.items()}

    @property
    def machines(self) -> list[MachineInfo]:
        infos: list[MachineInfo] = []
        for spec in self._specs:
            if spec.machine_id in self._opcua:
                address = self._opcua[spec.machine_id].endpoint
                infos.append(MachineInfo(spec.machine_id, spec.kind, "opcua", address))
            else:
                topic = (
                    printer_topic(spec.machine_id)
                    if spec.kind == "printer_3d"
                    else assembly_topic(spec.machine_id)
                )
                infos.append(MachineInfo(spec.machine_id, spec.kind, "mqtt", topic))
        meter_topics = f"microfactory/sim/{self._meter_id}/+"
        infos.append(MachineInfo(self._meter_id, "energy_meter", "mqtt", meter_topics))
        return infos

    @property
    def clock(self) -> SimClock | None:
        return self._clock

    @property
    def running(self) -> bool:
        return self._started

    def opcua_server(self, machine_id: str) -> OpcUaMachineServer:
        """The OPC UA face of a machine, so a test can stop and restart it."""
        return self._opcua[machine_id]

    def snapshots(self) -> dict[str, MachineSnapshot]:
        """Live view of every producing machine, e.g. for a terminal table."""
        return {mid: m.snapshot() for mid, m in self._models.items()}

    def meter_snapshot(self) -> MeterSnapshot | None:
        return None if self._meter is None else self._meter.snapshot()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if self._started:
            return
        s = self.settings
        if s.truth_dir is not None:
            self._truth = TruthRecorder(s.truth_dir)
        for srv in self._opcua.values():
            srv.attach_truth(self._truth)
        for pub in self._mqtt.values():
            pub.attach_truth(self._truth)
        if self._meter_pub is not None:
            self._meter_pub.attach_truth(self._truth)
        await asyncio.gather(*(srv.start() for srv in self._opcua.values()))
        for link in self._links:
            link.start()
        # the clock starts once the servers listen, so no simulated time is lost to startup
        origin_ns = time.time_ns() if s.start_ns is None else s.start_ns
        self._clock = SimClock(s.speed, origin_ns - origin_ns % NS_PER_MS)
        start_ns = self._clock.start_ns
        self._models = {
            spec.machine_id: MachineModel(
                spec,
                seed=s.seed,
                start_ns=start_ns,
                power_loss_probability=s.power_loss_probability,
            )
            for spec in self._specs
        }
        self._meter = MeterModel(
            self._meter_id, list(self._models.values()), seed=s.seed, start_ns=start_ns
        )
        self._started = True
        await self._tick()
        self._task = asyncio.create_task(self._loop(), name="workshop-loop")
        log.info(
            "workshop started: seed=%s speed=%s machines=%s",
            s.seed,
            s.speed,
            ", ".join(self._models),
        )

    async def stop(self) -> None:
        """Publish the last instant, write the summary, then close every face (bounded)."""
        if not self._started:
            return
        self._started = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._tick()
        if self._truth is not None:
            self._truth.summary(self.summary())
        await asyncio.gather(*(link.stop() for link in self._links))
        await asyncio.gather(*(srv.stop() for srv in self._opcua.values()))
        if self._truth is not None:
            self._truth.close()
            self._truth = None
        log.info("workshop stopped")

    async def run(self, duration_s: float | None = None) -> None:
        """Start, run for ``duration_s`` wall seconds (forever if None), then stop."""
        await self.start()
        try:
            if duration_s is None:
                await asyncio.Event().wait()
            else:
                await asyncio.sleep(duration_s)
        finally:
            await self.stop()

    async def __aenter__(self) -> Workshop:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def summary(self) -> dict[str, Any]:
        machines: dict[str, Any] = {}
        for mid, model in self._models.items():
            snap = model.snapshot()
            machines[mid] = {
                "kind": snap.kind,
                "state": snap.state,
                "part_count": snap.part_count,
                "good_count": snap.good_count,
                "scrap_count": snap.scrap_count,
                "energy_wh": snap.energy_wh,
                "energy_total_wh": energy_units_to_wh(model.energy_total_units),
                "resets": snap.resets,
                "faults": snap.faults,
                "power_losses": snap.power_losses,
            }
        if self._meter is not None:
            meter = self._meter.snapshot()
            machines[self._meter_id] = {
                "kind": meter.kind,
                "energy_kwh": meter.energy_kwh,
                "energy_wh": energy_units_to_wh(self._meter.energy_total_units),
                "resets": 0,
                "faults": 0,
            }
        return {
            "seed": self.settings.seed,
            "speed": self.settings.speed,
            "start_ns": None if self._clock is None else self._clock.start_ns,
            "end_ns": max((m.now_ns for m in self._models.values()), default=None),
            "machines": machines,
        }

    # ------------------------------------------------------------------ the loop
    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self._tick()
            except Exception:
                # supervisor: one bad tick must not end the simulation
                self.tick_errors += 1
                log.exception("workshop tick failed (%d so far)", self.tick_errors)

    async def _tick(self) -> None:
        assert self._clock is not None and self._meter is not None
        now_ns = self._clock.now_ns()
        for mid, model in self._models.items():
            events = model.advance(now_ns)
            await self._dispatch(mid, events)
        self._meter.advance(now_ns)
        for mid, model in self._models.items():
            snap = model.snapshot()
            if mid in self._opcua:
                await self._opcua[mid].publish(snap, tick=True)
            elif mid in self._mqtt:
                self._mqtt[mid].publish(snap, tick=True)
        if self._meter_pub is not None:
            self._meter_pub.publish(self._meter.snapshot(), tick=True)

    async def _dispatch(self, machine_id: str, events: list[Event]) -> None:
        """Record every event; publish once per instant with the state after that instant."""
        i = 0
        while i < len(events):
            ts = events[i].ts_ns
            part = False
            last: Event = events[i]
            while i < len(events) and events[i].ts_ns == ts:
                ev = events[i]
                if isinstance(ev, PartCompleted):
                    part = True
                    if self._truth is not None:
                        self._truth.part(machine_id, ev)
                elif isinstance(ev, StateChanged):
                    if self._truth is not None:
                        self._truth.state(machine_id, ev)
                    log.debug("%s: %s -> %s", machine_id, ev.previous, ev.state)
                last = ev
                i += 1
            if machine_id in self._opcua:
                await self._opcua[machine_id].publish(last.snapshot, part_completed=part)
            elif machine_id in self._mqtt:
                self._mqtt[machine_id].publish(last.snapshot)
