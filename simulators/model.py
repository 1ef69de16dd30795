"""Behaviour of the simulated machines: pure, deterministic, no I/O.

A machine is a small event-driven state machine advanced over simulated time. Everything that
makes a run reproducible lives here: all randomness comes from one ``random.Random`` per
machine, drawn in strict simulated-time order at fixed instants (state changes, part ends and
a fixed sampling grid), so the trajectory depends on the seed only, never on how often or how
irregularly the caller advances the model.

Time inside the model is integer milliseconds since the epoch, so every published timestamp
(MQTT epoch-ms, ISO 8601 microseconds, OPC UA 100 ns ticks) represents a model instant
exactly. Power is held constant between change points and quantised to milliwatts, and energy
is integrated in integer mW*ms, so counters are exact and never drift.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

State = Literal["off", "idle", "setup", "running", "fault"]
STATES: Final[tuple[State, ...]] = ("off", "idle", "setup", "running", "fault")

NS_PER_MS: Final = 1_000_000
# integer energy unit is mW*ms; 1 Wh = 1000 mW * 3_600_000 ms
ENERGY_UNITS_PER_WH: Final = 3_600_000_000


def derive_seed(seed: int, machine_id: str) -> int:
    """Give each machine its own stream that is stable across processes and Python versions."""
    digest = hashlib.sha256(f"{seed}:{machine_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def energy_units_to_wh(units: int) -> float:
    """Convert the exact integer energy to Wh with a single, correctly rounded division."""
    return units / ENERGY_UNITS_PER_WH


@dataclass(frozen=True, slots=True)
class PowerProfile:
    """Electrical draw per state; running draws a load level per part cycle."""

    idle_w: float
    setup_w: float
    running_w: tuple[float, float]
    fault_w: float
    noise: float = 0.02  # relative standard deviation of each 1 s sample


@dataclass(frozen=True, slots=True)
class GaugeSpec:
    """A process value that follows the machine state.

    ``tau_s`` > 0 makes it a first-order lag towards the target (temperatures); 0 makes it
    jump to the target (spindle speed, torque). ``running`` is drawn once per batch (the
    program's spindle speed or laser power) and overrides ``targets["running"]``.
    """

    name: str
    targets: Mapping[str, float]
    tau_s: float = 0.0
    noise: float = 0.0
    running: tuple[float, float] | None = None
    decimals: int = 2


@dataclass(frozen=True, slots=True)
class MachineSpec:
    """Everything that makes one kind of machine behave like itself."""

    machine_id: str
    kind: str
    power: PowerProfile
    cycle_time_s: float
    programs: tuple[str, ...]
    gauges: tuple[GaugeSpec, ...] = ()
    cycle_spread: float = 0.10
    scrap_probability: float = 0.04
    batch_size: int = 20
    setup_s: tuple[float, float] = (90.0, 180.0)
    idle_gap_probability: float = 0.03
    idle_gap_s: tuple[float, float] = (10.0, 90.0)
    # mean running time between faults; None disables faults
    mtbf_s: float | None = 5400.0
    fault_downtime_s: tuple[float, float] = (120.0, 420.0)
    power_off_s: tuple[float, float] = (60.0, 300.0)
    boot_s: tuple[float, float] = (20.0, 60.0)
    # fraction of this machine's power on L1, L2, L3 as seen by the workshop meter
    phases: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    sample_interval_s: float = 1.0


@dataclass(frozen=True, slots=True)
class MachineSnapshot:
    """What the machine shows at one instant: the source of every publication."""

    machine_id: str
    kind: str
    ts_ns: int
    state: State
    program: str
    power_w: float
    energy_wh: float
    part_count: int
    good_count: int
    scrap_count: int
    gauges: Mapping[str, float]
    resets: int
    faults: int
    power_losses: int


@dataclass(frozen=True, slots=True)
class StateChanged:
    ts_ns: int
    state: State
    previous: State | None
    snapshot: MachineSnapshot


@dataclass(frozen=True, slots=True)
class PartCompleted:
    """One part finished; ``energy_wh`` is the exact energy since the previous completion."""

    ts_ns: int
    part_count: int
    good: bool
    start_ns: int
    window_start_ns: int
    energy_wh: float
    energy_counter_wh: float
    cycle_time_s: float
    snapshot: MachineSnapshot


Event = StateChanged | PartCompleted


@dataclass(slots=True)
class _Counters:
    part: int = 0
    good: int = 0
    scrap: int = 0
    in_batch: int = 0
    resets: int = 0
    faults: int = 0
    power_losses: int = 0


@dataclass(slots=True)
class _Gauge:
    spec: GaugeSpec
    level: float
    shown: float
    running_target: float = 0.0


@dataclass(slots=True)
class _Schedule:
    state_end_ms: int | None = None
    fault_ms: int | None = None
    power_loss_ms: int | None = None
    sample_ms: int = 0
    # remaining running time before the next fault, so faults follow running hours
    fault_budget_ms: int | None = None
    run_since_ms: int = 0
    after_idle: State = "running"


class MachineModel:
    """One simulated machine, advanced with :meth:`advance` over simulated time."""

    def __init__(
        self,
        spec: MachineSpec,
        *,
        seed: int,
        start_ns: int,
        power_loss_probability: float = 0.01,
    ) -> None:
        if power_loss_probability < 0:
            raise ValueError(f"power_loss_probability must be >= 0, got {power_loss_probability}")
        if spec.batch_size < 1:
            raise ValueError(f"{spec.machine_id}: batch_size must be >= 1, got {spec.batch_size}")
        self.spec = spec
        self._rng = random.Random(derive_seed(seed, spec.machine_id))
        self._power_loss_rate_per_ms = power_loss_probability / 3_600_000
        self._now_ms = start_ns // NS_PER_MS
        self._start_ms = self._now_ms
        self._state: State = "setup"
        self._program = self._rng.choice(spec.programs)
        self._power_mw = 0
        self._run_level_w = spec.power.running_w[0]
        self._energy_total = 0  # lifetime, never resets
        self._energy_offset = 0  # counter = total - offset
        self._last_completion_total = 0
        self._last_completion_ms = self._now_ms
        self._cycle_start_ms = self._now_ms
        self._c = _Counters()
        self._gauges = [
            _Gauge(spec=g, level=g.targets.get("idle", 0.0), shown=g.targets.get("idle", 0.0))
            for g in spec.gauges
        ]
        self._gauge_ms = self._now_ms
        self._sample_ms = max(1, round(spec.sample_interval_s * 1000))
        self._s = _Schedule(sample_ms=self._now_ms + self._sample_ms)
        self._s.fault_budget_ms = self._draw_fault_budget()
        self._s.power_loss_ms = self._draw_power_loss()
        self._draw_batch_targets()
        self._s.state_end_ms = self._now_ms + self._draw_ms(spec.setup_s)
        self._resample()
        self._pending: list[Event] = [
            StateChanged(self._ts_ns, "setup", None, self.snapshot()),
        ]

    # ------------------------------------------------------------------ public
    @property
    def machine_id(self) -> str:
        return self.spec.machine_id

    @property
    def now_ns(self) -> int:
        return self._now_ms * NS_PER_MS

    @property
    def state(self) -> State:
        return self._state

    @property
    def power_mw(self) -> int:
        return self._power_mw

    @property
    def energy_total_units(self) -> int:
        """Lifetime energy in mW*ms, unaffected by counter resets (what a meter upstream sees)."""
        return self._energy_total

    def advance(self, to_ns: int) -> list[Event]:
        """Run the machine up to ``to_ns`` and return what happened, in time order."""
        to_ms = to_ns // NS_PER_MS
        events = self._pending
        self._pending = []
        while True:
            due_ms, kind = self._next_due()
            if due_ms > to_ms:
                break
            self._integrate(due_ms)
            if kind == "power_loss":
                self._on_power_loss(events)
            elif kind == "state_end":
                self._on_state_end(events)
            elif kind == "fault":
                self._on_fault(events)
            else:
                self._s.sample_ms += self._sample_ms
                self._resample()
        if to_ms > self._now_ms:
            self._integrate(to_ms)
        return events

    def snapshot(self) -> MachineSnapshot:
        c = self._c
        return MachineSnapshot(
            machine_id=self.spec.machine_id,
            kind=self.spec.kind,
            ts_ns=self._ts_ns,
            state=self._state,
            program=self._program,
            power_w=self._power_mw / 1000,
            energy_wh=energy_units_to_wh(self._energy_total - self._energy_offset),
            part_count=c.part,
            good_count=c.good,
            scrap_count=c.scrap,
            gauges={g.spec.name: g.shown for g in self._gauges},
            resets=c.resets,
            faults=c.faults,
            power_losses=c.power_losses,
        )

    # ------------------------------------------------------------------ scheduling
    @property
    def _ts_ns(self) -> int:
        return self._now_ms * NS_PER_MS

    def _next_due(self) -> tuple[int, str]:
        # ties resolve in this fixed priority so replays are identical
        s = self._s
        best = (s.sample_ms, 3, "sample")
        for due, prio, kind in (
            (s.power_loss_ms, 0, "power_loss"),
            (s.state_end_ms, 1, "state_end"),
            (s.fault_ms, 2, "fault"),
        ):
            if due is not None and (due, prio) < best[:2]:
                best = (due, prio, kind)
        return best[0], best[2]

    def _integrate(self, to_ms: int) -> None:
        self._energy_total += self._power_mw * (to_ms - self._now_ms)
        self._now_ms = to_ms

    def _draw_ms(self, bounds: tuple[float, float]) -> int:
        return max(1, round(self._rng.uniform(*bounds) * 1000))

    def _draw_fault_budget(self) -> int | None:
        if self.spec.mtbf_s is None:
            return None
        return max(1, round(self._rng.expovariate(1.0 / self.spec.mtbf_s) * 1000))

    def _draw_power_loss(self) -> int | None:
        if self._power_loss_rate_per_ms <= 0:
            return None
        return self._now_ms + max(1, round(self._rng.expovariate(self._power_loss_rate_per_ms)))

    def _draw_batch_targets(self) -> None:
        for g in self._gauges:
            if g.spec.running is not None:
                g.running_target = self._rng.uniform(*g.spec.running)

    # ------------------------------------------------------------------ transitions
    def _enter(self, state: State, duration_ms: int | None, events: list[Event]) -> None:
        previous = self._state
        s = self._s
        if previous == "running" and s.fault_budget_ms is not None:
            s.fault_budget_ms = max(1, s.fault_budget_ms - (self._now_ms - s.run_since_ms))
        s.fault_ms = None
        self._state = state
        s.state_end_ms = None if duration_ms is None else self._now_ms + duration_ms
        if state == "running":
            s.run_since_ms = self._now_ms
            if s.fault_budget_ms is not None:
                s.fault_ms = self._now_ms + s.fault_budget_ms
        self._resample()
        events.append(StateChanged(self._ts_ns, state, previous, self.snapshot()))

    def _start_cycle(self, events: list[Event]) -> None:
        spread = self.spec.cycle_spread
        cycle_ms = max(
            1, round(self.spec.cycle_time_s * 1000 * self._rng.uniform(1 - spread, 1 + spread))
        )
        self._run_level_w = self._rng.uniform(*self.spec.power.running_w)
        self._cycle_start_ms = self._now_ms
        if self._state == "running":
            # the new load level shows from the next sample: power only changes where it is
            # published (state changes and the sampling grid), so a consumer sees every step
            self._s.state_end_ms = self._now_ms + cycle_ms
        else:
            self._enter("running", cycle_ms, events)

    def _complete_part(self, events: list[Event]) -> None:
        c = self._c
        good = self._rng.random() >= self.spec.scrap_probability
        c.part += 1
        c.in_batch += 1
        if good:
            c.good += 1
        else:
            c.scrap += 1
        window = self._energy_total - self._last_completion_total
        snap = self.snapshot()
        events.append(
            PartCompleted(
                ts_ns=self._ts_ns,
                part_count=c.part,
                good=good,
                start_ns=self._cycle_start_ms * NS_PER_MS,
                window_start_ns=self._last_completion_ms * NS_PER_MS,
                energy_wh=energy_units_to_wh(window),
                energy_counter_wh=snap.energy_wh,
                cycle_time_s=(self._now_ms - self._cycle_start_ms) / 1000,
                snapshot=snap,
            )
        )
        self._last_completion_total = self._energy_total
        self._last_completion_ms = self._now_ms

    def _begin_setup(self, events: list[Event]) -> None:
        self._c.in_batch = 0
        self._program = self._rng.choice(self.spec.programs)
        self._draw_batch_targets()
        self._enter("setup", self._draw_ms(self.spec.setup_s), events)

    def _on_state_end(self, events: list[Event]) -> None:
        state = self._state
        if state == "setup" or state == "fault":
            self._start_cycle(events)
        elif state == "running":
            self._complete_part(events)
            if self._c.in_batch >= self.spec.batch_size:
                self._begin_setup(events)
            elif self._rng.random() < self.spec.idle_gap_probability:
                self._s.after_idle = "running"
                self._enter("idle", self._draw_ms(self.spec.idle_gap_s), events)
            else:
                self._start_cycle(events)
        elif state == "idle":
            if self._s.after_idle == "setup":
                self._enter("setup", self._draw_ms(self.spec.setup_s), events)
            else:
                self._start_cycle(events)
        else:  # off: power is back; the controller restarts with a zeroed energy counter
            self._energy_offset = self._energy_total
            self._c.resets += 1
            self._s.after_idle = "setup"
            self._s.power_loss_ms = self._draw_power_loss()
            self._enter("idle", self._draw_ms(self.spec.boot_s), events)

    def _on_fault(self, events: list[Event]) -> None:
        # the part being machined is abandoned; its energy counts towards the next part
        self._c.faults += 1
        self._s.fault_budget_ms = self._draw_fault_budget()
        self._s.run_since_ms = self._now_ms
        self._enter("fault", self._draw_ms(self.spec.fault_downtime_s), events)

    def _on_power_loss(self, events: list[Event]) -> None:
        self._c.power_losses += 1
        self._s.power_loss_ms = None
        self._enter("off", self._draw_ms(self.spec.power_off_s), events)

    # ------------------------------------------------------------------ signals
    def _resample(self) -> None:
        """Draw power and gauges for the segment that starts now (a change point)."""
        p = self.spec.power
        state = self._state
        if state == "off":
            watts = 0.0
        else:
            base = {
                "idle": p.idle_w,
                "setup": p.setup_w,
                "running": self._run_level_w,
                "fault": p.fault_w,
            }[state]
            watts = max(0.0, base * (1 + self._rng.gauss(0.0, p.noise)))
        self._power_mw = round(watts * 1000)
        dt_s = (self._now_ms - self._gauge_ms) / 1000
        self._gauge_ms = self._now_ms
        for g in self._gauges:
            spec = g.spec
            if state == "running" and spec.running is not None:
                target = g.running_target
            else:
                target = spec.targets.get(state, spec.targets.get("idle", 0.0))
            if spec.tau_s > 0:
                g.level += (target - g.level) * (1 - math.exp(-dt_s / spec.tau_s))
            else:
                g.level = target
            noisy = g.level + self._rng.gauss(0.0, spec.noise) if g.level != 0 else 0.0
            g.shown = round(max(0.0, noisy), spec.decimals)


# ---------------------------------------------------------------------- the meter
@dataclass(frozen=True, slots=True)
class MeterSnapshot:
    machine_id: str
    kind: str
    ts_ns: int
    energy_kwh: float
    power_w: float
    power_l_w: tuple[float, float, float]
    voltage_l_v: tuple[float, float, float]


class MeterModel:
    """A three-phase meter at the workshop's incomer.

    Its energy is the sum of the machines' lifetime integer energies plus its own base load,
    so it is the exact integral of the power it shows, by linearity and without re-sampling
    the machines. Call :meth:`advance` after every machine has been advanced to the same time.
    """

    def __init__(
        self,
        machine_id: str,
        machines: Sequence[MachineModel],
        *,
        seed: int,
        start_ns: int,
        base_load_w: float = 300.0,
        base_noise_w: float = 25.0,
        base_phases: tuple[float, float, float] = (0.3, 0.3, 0.4),
        nominal_voltage_v: float = 230.0,
        sample_interval_s: float = 1.0,
    ) -> None:
        self.machine_id = machine_id
        self.kind = "energy_meter"
        self._machines = list(machines)
        self._rng = random.Random(derive_seed(seed, machine_id))
        self._base_load_w = base_load_w
        self._base_noise_w = base_noise_w
        self._base_phases = base_phases
        self._nominal_v = nominal_voltage_v
        self._now_ms = start_ns // NS_PER_MS
        self._sample_ms = max(1, round(sample_interval_s * 1000))
        self._next_sample_ms = self._now_ms + self._sample_ms
        self._base_mw = 0
        self._base_energy = 0
        self._voltage_noise = (0.0, 0.0, 0.0)
        self._resample()

    def advance(self, to_ns: int) -> None:
        to_ms = to_ns // NS_PER_MS
        while self._next_sample_ms <= to_ms:
            self._integrate(self._next_sample_ms)
            self._next_sample_ms += self._sample_ms
            self._resample()
        if to_ms > self._now_ms:
            self._integrate(to_ms)

    @property
    def energy_total_units(self) -> int:
        return self._base_energy + sum(m.energy_total_units for m in self._machines)

    def snapshot(self) -> MeterSnapshot:
        phases = self._phase_mw()
        total_mw = sum(phases)
        volts = tuple(
            round(self._nominal_v - 0.00012 * (mw / 1000) + n, 2)
            for mw, n in zip(phases, self._voltage_noise, strict=True)
        )
        return MeterSnapshot(
            machine_id=self.machine_id,
            kind=self.kind,
            ts_ns=self._now_ms * NS_PER_MS,
            energy_kwh=self.energy_total_units / (ENERGY_UNITS_PER_WH * 1000),
            power_w=total_mw / 1000,
            power_l_w=(phases[0] / 1000, phases[1] / 1000, phases[2] / 1000),
            voltage_l_v=(volts[0], volts[1], volts[2]),
        )

    def _phase_mw(self) -> tuple[int, int, int]:
        l1 = l2 = l3 = 0
        loads = [(m.power_mw, m.spec.phases) for m in self._machines]
        loads.append((self._base_mw, self._base_phases))
        for mw, (f1, f2, _f3) in loads:
            a = round(mw * f1)
            b = round(mw * f2)
            l1 += a
            l2 += b
            l3 += mw - a - b  # integer split keeps L1+L2+L3 equal to the total exactly
        return l1, l2, l3

    def _integrate(self, to_ms: int) -> None:
        self._base_energy += self._base_mw * (to_ms - self._now_ms)
        self._now_ms = to_ms

    def _resample(self) -> None:
        watts = max(0.0, self._base_load_w + self._rng.gauss(0.0, self._base_noise_w))
        self._base_mw = round(watts * 1000)
        self._voltage_noise = (
            self._rng.gauss(0.0, 0.4),
            self._rng.gauss(0.0, 0.4),
            self._rng.gauss(0.0, 0.4),
        )
