"""The virtual workshop: machine models on one simulated clock, each behind its own protocol.

The workshop owns the only loop: every tick it advances all models to the same simulated
instant, hands what happened to the protocol faces and to the ground-truth recorder, and lets
the meter sum the machines. The simulators know nothing of the gateway.

Lifecycle (all coroutines, bounded, idempotent)::

    ws = Workshop(WorkshopSettings(seed=7, speed=600, mqtt_url=broker.url,
                                   opcua_ports={"mill-1": 0, "laser-1": 0},
                                   truth_dir=tmp / "truth"))
    await ws.start(paused=True)   # = start_servers(): OPC UA listening, MQTT connected
    ws.opcua_endpoints            # {"mill-1": "opc.tcp://127.0.0.1:PORT/microfactory/mill-1", ...}
    ws.mqtt_topics                # {"printer-1": "microfactory/sim/printer-1/telemetry", ...}
    ...                           # connect the gateway / subscribe: nothing has happened yet
    await ws.resume()             # = start_clock(): simulated time starts at the origin
    await asyncio.sleep(5)
    await ws.stop()               # last instant published, summary.json written
    truth = load_truth(tmp / "truth")

``await ws.start()`` (no arguments) does both steps at once, as before; ``async with
Workshop(...)`` and ``await ws.run(duration_s)`` too.

While paused, simulated time stands still at the origin (``settings.start_ns``, or the wall
time when :meth:`Workshop.start_servers` ran, whole milliseconds): the OPC UA servers already
show every machine as it is at the origin (state ``setup``, counters 0, source timestamps and
``Server/ServerStatus/CurrentTime`` = origin) and those values are in ``published.jsonl``,
because a client that subscribes later still receives them; the MQTT machines publish nothing
until the clock starts (MQTT is not retained), so every MQTT message in ``published.jsonl`` is
one a subscriber that was there before :meth:`Workshop.resume` has received.

A run is a pure function of the seed and the origin: the models' randomness is drawn at
simulated instants only, so how often the loop ticks (or how long it was paused) changes
nothing in the ground truth, only how far it gets.
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

from microfactory.mqtt.settings import redact_url

from .clock import SimClock
from .machines import DEFAULT_MACHINES, METER_ID
from .modbus_meter import MODELS, MeterFeed, ModbusMeterServer
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


class ModbusMeterSettings(BaseModel):
    """A DIN-rail meter on one machine's supply, read over Modbus TCP like a real one."""

    model_config = ConfigDict(extra="forbid")

    machine: str = Field(default="assembly-1", description="the machine the meter measures")
    model: str = Field(default="eastron_sdm120", description=f"one of {', '.join(MODELS)}")
    port: int = Field(
        default=0, ge=0, le=65535, description="TCP port; 0 (the default) picks a free one"
    )
    unit_id: int = Field(default=1, ge=1, le=247, description="the meter's Modbus address")


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
    modbus_meters: list[ModbusMeterSettings] = Field(
        default_factory=lambda: [ModbusMeterSettings()],
        description="Modbus meters on machines' supplies (their energy is the machine's truth)",
    )
    truth_dir: Path | None = None
    pki_dir: Path | None = Field(
        default=None,
        description=(
            "where the OPC UA servers keep their certificates (one folder per machine), so a "
            "gateway that trusted one keeps trusting it across runs; None: a temporary one"
        ),
    )
    power_loss_probability: float = Field(
        default=0.01, ge=0, description="expected power losses per machine per simulated hour"
    )
    tick_s: float = Field(default=0.1, gt=0, description="wall seconds between model steps")
    telemetry_interval_s: float = Field(default=1.0, gt=0, description="simulated seconds")
    min_publish_interval_s: float = Field(
        default=0.2, ge=0, description="wall-time floor between periodic MQTT samples"
    )
    start_ns: int | None = Field(default=None, description="simulated origin, UTC ns; None = now")
    opcua_linger_s: float = Field(
        default=0.5,
        ge=0,
        description="wall seconds the OPC UA servers stay up after the last instant",
    )
    mqtt_connect_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="how long start waits for the broker; after it the links keep retrying",
    )


@dataclass(frozen=True, slots=True)
class MachineInfo:
    machine_id: str
    kind: str
    protocol: Protocol
    address: str  # OPC UA endpoint or MQTT topic (filter)
    meter: str | None = None  # "eastron_sdm120 at 127.0.0.1:5020 unit 1": its Modbus meter


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
        self._modbus: dict[str, tuple[ModbusMeterSettings, ModbusMeterServer]] = {}
        self._feeds: dict[str, MeterFeed] = {}
        self._clock: SimClock | None = None
        self._truth: TruthRecorder | None = None
        self._task: asyncio.Task[None] | None = None
        self._origin_ns: int | None = None
        self._servers_started = False
        self._started = False  # the clock runs
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
                    pki_dir=s.pki_dir / spec.machine_id if s.pki_dir is not None else None,
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
        known = {spec.machine_id for spec in self._specs}
        explicit = "modbus_meters" in s.model_fields_set
        for m in s.modbus_meters:
            if m.machine not in known:
                if not explicit:
                    continue  # the standard meter, on a workshop built without its machine
                raise ValueError(f"modbus_meters: no machine {m.machine!r} in this workshop")
            if m.model not in MODELS:
                raise ValueError(f"modbus_meters: unknown model {m.model!r} ({', '.join(MODELS)})")
            if m.machine in self._modbus:
                raise ValueError(f"modbus_meters: two meters on {m.machine!r}")
            server = ModbusMeterServer(
                model=m.model,
                host=s.opcua_host,
                port=m.port,
                unit_id=m.unit_id,
                name=f"{m.machine}-meter",
            )
            self._modbus[m.machine] = (m, server)
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
    def modbus_meters(self) -> dict[str, tuple[str, int, int]]:
        """Machine id -> (meter model, TCP port, unit id) of each Modbus meter (once started)."""
        return {mid: (m.model, srv.port, m.unit_id) for mid, (m, srv) in self._modbus.items()}

    def modbus_server(self, machine_id: str) -> ModbusMeterServer:
        """The Modbus meter on a machine, so a test can stop and restart it."""
        return self._modbus[machine_id][1]

    @property
    def machines(self) -> list[MachineInfo]:
        infos: list[MachineInfo] = []
        for spec in self._specs:
            meter = None
            if spec.machine_id in self._modbus:
                m, srv = self._modbus[spec.machine_id]
                meter = f"{m.model} at {srv.endpoint} unit {m.unit_id}"
            if spec.machine_id in self._opcua:
                address = self._opcua[spec.machine_id].endpoint
                infos.append(MachineInfo(spec.machine_id, spec.kind, "opcua", address, meter))
            else:
                topic = (
                    printer_topic(spec.machine_id)
                    if spec.kind == "printer_3d"
                    else assembly_topic(spec.machine_id)
                )
                infos.append(MachineInfo(spec.machine_id, spec.kind, "mqtt", topic, meter))
        meter_topics = f"microfactory/sim/{self._meter_id}/+"
        infos.append(MachineInfo(self._meter_id, "energy_meter", "mqtt", meter_topics))
        return infos

    @property
    def clock(self) -> SimClock | None:
        return self._clock

    @property
    def running(self) -> bool:
        """True while simulated time runs (between start/resume and stop)."""
        return self._started

    @property
    def servers_running(self) -> bool:
        """True once the OPC UA servers listen and the MQTT links are started, until stop."""
        return self._servers_started

    @property
    def origin_ns(self) -> int | None:
        """Simulated time at which the machines start (UTC ns), fixed by start_servers."""
        return self._origin_ns

    def now_ns(self) -> int:
        """The simulated world's time (UTC ns): the origin until the clock starts, 0 before.

        What a gateway in the same process stamps receive times with, so a device that sends
        no timestamp (a Modbus meter) lines up with the machines' own, at any speed.
        """
        if self._clock is not None:  # time goes on after stop, as it does in a workshop
            return self._clock.now_ns()
        return self._origin_ns or 0

    @property
    def mqtt_topics(self) -> dict[str, str]:
        """Machine id -> MQTT topic (the meter's is a filter, one topic per quantity)."""
        if self.settings.mqtt_url is None:
            return {}
        return {m.machine_id: m.address for m in self.machines if m.protocol == "mqtt"}

    def opcua_server(self, machine_id: str) -> OpcUaMachineServer:
        """The OPC UA face of a machine, so a test can stop and restart it."""
        return self._opcua[machine_id]

    def snapshots(self) -> dict[str, MachineSnapshot]:
        """Live view of every producing machine, e.g. for a terminal table."""
        return {mid: m.snapshot() for mid, m in self._models.items()}

    def meter_snapshot(self) -> MeterSnapshot | None:
        return None if self._meter is None else self._meter.snapshot()

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, paused: bool = False) -> None:
        """Start the servers and, unless ``paused``, the clock (see :meth:`resume`)."""
        await self.start_servers()
        if not paused:
            await self.start_clock()

    async def resume(self) -> None:
        """Start simulated time after ``start(paused=True)``; a no-op when it already runs."""
        await self.start_clock()

    async def start_servers(self) -> None:
        """Listen on every OPC UA endpoint and connect every MQTT link; the clock stays still.

        The origin of simulated time is fixed here and the machines are built at it, so the
        OPC UA servers show real values (at the origin) to a client connecting before the
        clock starts. Waits at most ``mqtt_connect_timeout_s`` for the broker, then goes on
        (the links keep reconnecting by themselves and queue QoS 1 messages meanwhile).
        """
        if self._servers_started:
            return
        s = self.settings
        origin_ns = time.time_ns() if s.start_ns is None else s.start_ns
        self._origin_ns = origin_ns - origin_ns % NS_PER_MS
        self._clock = None
        if s.truth_dir is not None:
            self._truth = TruthRecorder(s.truth_dir)
        for srv in self._opcua.values():
            srv.attach_truth(self._truth)
        for pub in self._mqtt.values():
            pub.attach_truth(self._truth)
        if self._meter_pub is not None:
            self._meter_pub.attach_truth(self._truth)
        self._models = {
            spec.machine_id: MachineModel(
                spec,
                seed=s.seed,
                start_ns=self._origin_ns,
                power_loss_probability=s.power_loss_probability,
            )
            for spec in self._specs
        }
        self._meter = MeterModel(
            self._meter_id, list(self._models.values()), seed=s.seed, start_ns=self._origin_ns
        )
        self._feeds = {
            mid: MeterFeed.for_machine(self._models[mid], seed=s.seed) for mid in self._modbus
        }
        for mid, (_, meter_server) in self._modbus.items():
            meter_server.update(self._feeds[mid].reading())
        modbus = [srv for _, srv in self._modbus.values()]
        try:
            await asyncio.gather(*(srv.start() for srv in self._opcua.values()))
            await asyncio.gather(*(srv.start() for srv in modbus))
        except BaseException:
            # a port in use or the like: leave nothing half-open behind
            await asyncio.gather(*(srv.stop() for srv in self._opcua.values()))
            await asyncio.gather(*(srv.stop() for srv in modbus))
            if self._truth is not None:
                self._truth.close()
                self._truth = None
            raise
        for link in self._links:
            link.start()
        self._servers_started = True
        for mid, srv in self._opcua.items():
            await srv.publish(self._models[mid].snapshot(), tick=True)
        if self._links:
            connected = await asyncio.gather(
                *(link.wait_connected(s.mqtt_connect_timeout_s) for link in self._links)
            )
            missing = [
                link.client_id for link, ok in zip(self._links, connected, strict=True) if not ok
            ]
            if missing:
                log.warning(
                    "MQTT broker %s not reached within %.1f s by %s; the links keep retrying",
                    redact_url(s.mqtt_url or ""),
                    s.mqtt_connect_timeout_s,
                    ", ".join(missing),
                )
        log.info(
            "workshop servers up: %s; Modbus meters %s; MQTT %s",
            ", ".join(f"{m} {e}" for m, e in self.opcua_endpoints.items()) or "no OPC UA",
            ", ".join(f"{m} {srv.endpoint}" for m, (_, srv) in self._modbus.items()) or "none",
            redact_url(s.mqtt_url) if s.mqtt_url else "off",
        )

    async def start_clock(self) -> None:
        """Let simulated time run from the origin; starts the servers first if needed."""
        if self._started:
            return
        await self.start_servers()
        s = self.settings
        assert self._origin_ns is not None
        self._clock = SimClock(s.speed, self._origin_ns)
        self._started = True
        await self._tick()
        self._task = asyncio.create_task(self._loop(), name="workshop-loop")
        log.info(
            "workshop clock started: seed=%s speed=%s machines=%s",
            s.seed,
            s.speed,
            ", ".join(self._models),
        )

    async def stop(self) -> None:
        """Publish the last instant, write the summary, then close every face (bounded)."""
        if not self._servers_started:
            return
        clock_ran = self._started
        self._started = False
        self._servers_started = False
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if clock_ran:
            await self._tick()
        if self._truth is not None:
            self._truth.summary(self.summary())
        await asyncio.gather(*(link.stop() for link in self._links))
        if clock_ran and self._opcua:
            # OPC UA subscribers get the last instant in their next publish cycle; closing the
            # server at once would make the final values unobservable
            await asyncio.sleep(self.settings.opcua_linger_s)
        await asyncio.gather(*(srv.stop() for srv in self._opcua.values()))
        await asyncio.gather(*(srv.stop() for _, srv in self._modbus.values()))
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
            "start_ns": self._origin_ns,
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
        for mid, feed in self._feeds.items():
            self._modbus[mid][1].update(feed.reading())
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
