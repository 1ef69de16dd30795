"""Per-machine derivations: machine events for the MES from normalised samples.

Pure and synchronous (no I/O, no protocol), so it is tested with plain samples. One
:class:`EventDeriver` per gateway reads samples in spool order and turns them into the wire
contract's events:

- ``StateChanged`` whenever the ``state`` signal of a machine takes a new value, carrying
  the state that just ended: its start (``previous_since_ns``) and the energy the machine used
  in it (``previous_energy_wh``: the ``energy_active`` counter at this change minus the counter
  at the previous one, corrected for resets; None when either end is not known);
- ``PartCompleted`` for every increment of ``part_count``, carrying the part's own energy
  (the ``energy_active`` counter at this completion minus the counter at the previous one,
  corrected for counter resets, e.g. after a power loss) and its cycle time (since the later
  of the previous completion and the machine's last entry into ``running``);
- ``GapReported`` from the gateway's own gap markers.

Counters of one instant may arrive in any order (several OPC UA monitored items, one MQTT
message), so a part is held until the energy counter and the good or scrap counter (whichever
the machine reports) have been seen at or after the part's timestamp, or until the machine's
data has moved on by ``hold_s`` without them. A state change is held the same way until the
energy counter has been seen at or after it; events leave in the order of their timestamps.

Event ids are derived from the data (site, machine, kind, source timestamp, counter value):
a replay of the same samples yields the same ids, and the MES ignores ids it already has.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from microfactory.contract import CONTEXT_TAGS, GapReported, PartCompleted, StateChanged

from .sample import Sample

log = logging.getLogger(__name__)

Event = StateChanged | PartCompleted | GapReported
Point = tuple[int, float]

NS = 1_000_000_000
_GAP_TEXT = re.compile(r"^(?P<reason>.*) \(from (?P<start>\d+)\)$", re.DOTALL)
_HELD = ("energy_active", "good_count", "scrap_count")
MAX_EVENT_ID = 128
MAX_POINTS = 5000


def event_id(*parts: object) -> str:
    """A stable id from the event's identifying data, hashed if it would exceed 128 chars."""
    text = "/".join(str(p) for p in parts)
    if len(text) <= MAX_EVENT_ID:
        return text
    return "sha1:" + hashlib.sha1(text.encode()).hexdigest()


@dataclass(slots=True)
class PendingPart:
    ts_ns: int
    part_count: int  # the counter after this step
    step: int  # parts completed in this step (>1 when the counter jumped)
    tags: dict[str, str]


@dataclass(slots=True)
class PendingState:
    ts_ns: int
    state: str
    previous: str | None
    previous_since_ns: int | None
    tags: dict[str, str]


@dataclass(slots=True)
class MachineTrack:
    """What the deriver remembers about one machine; JSON-serialisable for restarts."""

    state: str | None = None
    running_since: list[int] = field(default_factory=list)
    part_count: int | None = None
    last_part_ns: int | None = None
    energy_at_last_part: float | None = None
    good_at_last_part: float | None = None
    scrap_at_last_part: float | None = None
    energy_offset: float = 0.0
    energy_raw: float | None = None
    resets: int = 0
    points: dict[str, list[Point]] = field(default_factory=dict)  # corrected for energy
    pending: list[PendingPart] = field(default_factory=list)
    latest_ns: int = 0
    state_since: int | None = None
    energy_at_state: float | None = None  # corrected counter when the current state began
    # else the first reading in the current state (the state began before the counter was read)
    energy_from_ns: int | None = None
    energy_from_wh: float | None = None
    pending_states: list[PendingState] = field(default_factory=list)
    seen_ns: int = 0  # latest source time of any sample of the machine


def _value_at(points: list[Point], ts_ns: int) -> float | None:
    """Value of the last point at or before ``ts_ns`` (a counter holds between samples)."""
    i = bisect.bisect_right(points, (ts_ns, float("inf")))
    return points[i - 1][1] if i else None


def _energy_at(points: list[Point], ts_ns: int) -> float | None:
    """Energy counter at ``ts_ns``: the sample at that instant, else linear between two."""
    i = bisect.bisect_left(points, (ts_ns, float("-inf")))
    if i < len(points) and points[i][0] == ts_ns:
        return points[i][1]
    if i == 0 or i == len(points):
        return None
    (t0, e0), (t1, e1) = points[i - 1], points[i]
    return e0 + (e1 - e0) * (ts_ns - t0) / (t1 - t0)


class EventDeriver:
    """Turns one gateway's normalised samples into machine events, machine by machine."""

    def __init__(self, site: str, *, hold_s: float = 60.0, history_s: float = 600.0) -> None:
        self.site = site
        self.hold_ns = int(hold_s * NS)
        self.history_ns = int(history_s * NS)
        self.machines: dict[str, MachineTrack] = {}

    # ------------------------------------------------------------------ persistence
    def dump(self) -> dict[str, Any]:
        return {m: asdict(t) for m, t in self.machines.items()}

    def load(self, data: dict[str, Any]) -> None:
        """Restore what :meth:`dump` wrote; unreadable entries are dropped (baseline again)."""
        self.machines = {}
        for machine, raw in data.items():
            try:
                track = MachineTrack(
                    **{k: v for k, v in raw.items() if k not in ("pending", "pending_states")}
                )
                track.points = {
                    s: [(int(t), float(v)) for t, v in pts] for s, pts in track.points.items()
                }
                track.pending = [PendingPart(**p) for p in raw.get("pending", [])]
                track.pending_states = [PendingState(**p) for p in raw.get("pending_states", [])]
            except (TypeError, ValueError) as err:
                log.warning(
                    "event state of machine %s unreadable (%s); starting afresh", machine, err
                )
                continue
            self.machines[machine] = track

    # ------------------------------------------------------------------ feeding
    def feed(self, samples: list[Sample]) -> list[Event]:
        """Events the samples complete, in the order they became known."""
        out: list[Event] = []
        for s in samples:
            if s.signal == "gap":
                gap = self._gap(s)
                if gap is not None:
                    out.append(gap)
                continue
            if s.quality == "bad":
                continue
            track = self.machines.get(s.machine)
            if track is None:
                track = self.machines[s.machine] = MachineTrack()
            track.seen_ns = max(track.seen_ns, s.ts_ns)
            if s.signal == "state" and isinstance(s.value, str):
                self._state(s, track)
                out.extend(self._resolve(s.machine, track))
            elif isinstance(s.value, int | float):
                if s.signal == "part_count":
                    self._part_count(s, float(s.value), track)
                elif s.signal in _HELD:
                    self._counter(s, float(s.value), track)
                else:
                    if track.pending_states:  # the machine's data moves on: maybe past hold_s
                        out.extend(self._resolve(s.machine, track))
                    continue
                track.latest_ns = max(track.latest_ns, s.ts_ns)
                out.extend(self._resolve(s.machine, track))
        return out

    def _gap(self, s: Sample) -> GapReported | None:
        m = _GAP_TEXT.match(str(s.value))
        if m is None:
            return None
        start = int(m.group("start"))
        return GapReported(
            event_id=event_id(self.site, s.machine, "gap", start, s.ts_ns),
            site=self.site,
            machine=s.machine,
            ts_ns=s.ts_ns,
            start_ns=min(start, s.ts_ns),
            reason=m.group("reason")[:500],
        )

    def _state(self, s: Sample, track: MachineTrack) -> None:
        assert isinstance(s.value, str)
        if s.value == track.state:
            return
        if track.state_since is not None and s.ts_ns < track.state_since:
            return  # older than the state we have: a late repeat
        previous = track.state
        track.state = s.value
        if s.value == "running":
            track.running_since = [*track.running_since[-7:], s.ts_ns]
        track.pending_states.append(
            PendingState(s.ts_ns, s.value, previous, track.state_since, dict(s.tags))
        )
        track.state_since = s.ts_ns

    def _complete_state(self, machine: str, track: MachineTrack, st: PendingState) -> StateChanged:
        points = track.points.get("energy_active", [])
        energy_now = _energy_at(points, st.ts_ns)
        energy_wh: float | None = None
        from_ns: int | None = None
        if energy_now is not None and track.energy_at_state is not None:
            energy_wh = max(0.0, energy_now - track.energy_at_state)
        elif energy_now is not None and track.energy_from_wh is not None:
            energy_wh = max(0.0, energy_now - track.energy_from_wh)
            from_ns = track.energy_from_ns
        track.energy_at_state = energy_now
        track.energy_from_ns = track.energy_from_wh = None
        if energy_now is None:
            i = bisect.bisect_left(points, (st.ts_ns, float("-inf")))
            if i < len(points):  # the first reading in the new state: count from there
                track.energy_from_ns, track.energy_from_wh = points[i]
        return StateChanged(
            event_id=event_id(self.site, machine, "state", st.ts_ns, st.state),
            site=self.site,
            machine=machine,
            ts_ns=st.ts_ns,
            state=st.state,
            previous=st.previous,
            previous_since_ns=st.previous_since_ns,
            previous_energy_wh=energy_wh if st.previous_since_ns is not None else None,
            previous_energy_from_ns=from_ns if st.previous_since_ns is not None else None,
            **_context(st.tags),
        )

    def _counter(self, s: Sample, value: float, track: MachineTrack) -> None:
        points = track.points.setdefault(s.signal, [])
        if points and s.ts_ns <= points[-1][0]:
            return  # a repeat (reconnect, QoS 1 redelivery) or older than what we have
        if s.signal == "energy_active":
            last = track.energy_raw
            if last is not None and value < last - 1e-9 * max(1.0, abs(last)):
                # The counter restarted (power loss, controller reset): what it had counted
                # up to its last reading is kept in the offset, so the sum goes on.
                track.energy_offset += last
                track.resets += 1
                log.info(
                    "machine %s: energy counter reset (%.3f Wh -> %.3f Wh)", s.machine, last, value
                )
            track.energy_raw = value
            value = track.energy_offset + value
            self._first_reading_in_state(track, s.ts_ns, value)
        points.append((s.ts_ns, value))

    @staticmethod
    def _first_reading_in_state(track: MachineTrack, ts_ns: int, value: float) -> None:
        """A state released before any counter reading: its energy counts from the first one."""
        if track.pending_states or track.state_since is None or ts_ns < track.state_since:
            return
        if track.energy_at_state is not None or track.energy_from_wh is not None:
            return
        if ts_ns == track.state_since:
            track.energy_at_state = value
        else:
            track.energy_from_ns, track.energy_from_wh = ts_ns, value

    def _part_count(self, s: Sample, value: float, track: MachineTrack) -> None:
        count = int(value)
        last = track.part_count
        track.part_count = count
        if last is None or count == last:
            return
        if count < last:
            log.info("machine %s: part counter went back %d -> %d", s.machine, last, count)
            return
        track.pending.append(PendingPart(s.ts_ns, count, count - last, dict(s.tags)))

    # ------------------------------------------------------------------ resolving parts
    def _ready(self, track: MachineTrack, part: PendingPart) -> bool:
        """Energy seen at or after the part, and the good or the scrap counter that moved.

        A counter that did not change may never be sent again (an OPC UA monitored item only
        reports changes), so only the ones that must have changed are waited for.
        """
        if track.latest_ns > part.ts_ns + self.hold_ns:
            return True
        pts = track.points
        energy = pts.get("energy_active")
        if energy and energy[-1][0] < part.ts_ns:
            return False
        verdict = [p for s in ("good_count", "scrap_count") if (p := pts.get(s))]
        return not verdict or any(p[-1][0] >= part.ts_ns for p in verdict)

    def _state_ready(self, track: MachineTrack, st: PendingState) -> bool:
        """The energy counter seen at or after the change (or none to wait for)."""
        if max(track.latest_ns, track.seen_ns) > st.ts_ns + self.hold_ns:
            return True
        energy = track.points.get("energy_active")
        return not energy or energy[-1][0] >= st.ts_ns

    def _resolve(self, machine: str, track: MachineTrack) -> list[Event]:
        """Release held parts and state changes that are ready, oldest first."""
        out: list[Event] = []
        while track.pending or track.pending_states:
            part = track.pending[0] if track.pending else None
            st = track.pending_states[0] if track.pending_states else None
            # a state change and a part of the same instant: the part first (it ended the cycle)
            if st is not None and (part is None or st.ts_ns < part.ts_ns):
                if not self._state_ready(track, st):
                    break
                out.append(self._complete_state(machine, track, track.pending_states.pop(0)))
            elif part is not None and self._ready(track, part):
                out.extend(self._complete(machine, track, track.pending.pop(0)))
            else:
                break
        self._prune(track)
        return out

    def _complete(self, machine: str, track: MachineTrack, part: PendingPart) -> list[Event]:
        pts = track.points
        energy_now = _energy_at(pts.get("energy_active", []), part.ts_ns)
        good_now = _value_at(pts.get("good_count", []), part.ts_ns)
        scrap_now = _value_at(pts.get("scrap_count", []), part.ts_ns)
        energy_wh: float | None = None
        if energy_now is not None and track.energy_at_last_part is not None:
            energy_wh = max(0.0, energy_now - track.energy_at_last_part)
        good_before = track.good_at_last_part
        scrap_before = track.scrap_at_last_part
        if good_before is None:
            good_before = _value_at(pts.get("good_count", []), part.ts_ns - 1)
        if scrap_before is None:
            scrap_before = _value_at(pts.get("scrap_count", []), part.ts_ns - 1)
        scrapped: int | None = None
        if scrap_now is not None and scrap_before is not None and scrap_now >= scrap_before:
            scrapped = min(part.step, int(scrap_now - scrap_before))
        elif good_now is not None and good_before is not None and good_now >= good_before:
            scrapped = max(0, part.step - int(good_now - good_before))
        cycle: float | None = None
        if part.step == 1:
            starts = [t for t in track.running_since if t <= part.ts_ns]
            if track.last_part_ns is not None:
                starts.append(track.last_part_ns)
            if starts:
                cycle = (part.ts_ns - max(starts)) / NS
        events: list[Event] = []
        for k in range(part.step):
            count = part.part_count - part.step + 1 + k
            good = None if scrapped is None else k < part.step - scrapped
            events.append(
                PartCompleted(
                    event_id=event_id(self.site, machine, "part", part.ts_ns, count),
                    site=self.site,
                    machine=machine,
                    ts_ns=part.ts_ns,
                    part_count=count,
                    good=good,
                    # a jump of several parts has no per-part energy: say so, do not guess
                    energy_wh=energy_wh if part.step == 1 else None,
                    cycle_time_s=cycle,
                    **_context(part.tags),
                )
            )
        track.last_part_ns = part.ts_ns
        track.energy_at_last_part = energy_now
        track.good_at_last_part = good_now
        track.scrap_at_last_part = scrap_now
        return events

    def _prune(self, track: MachineTrack) -> None:
        """Keep the points pending parts and late arrivals may need, bounded in number."""
        horizon = track.latest_ns - self.history_ns
        if track.pending:
            horizon = min(horizon, track.pending[0].ts_ns)
        if track.pending_states:
            horizon = min(horizon, track.pending_states[0].ts_ns)
        for signal, pts in track.points.items():
            i = bisect.bisect_left(pts, (horizon, float("-inf")))
            keep_from = max(0, min(i - 1, len(pts) - 2), len(pts) - MAX_POINTS)
            if keep_from > 0:
                track.points[signal] = pts[keep_from:]


def _context(tags: dict[str, str]) -> dict[str, str]:
    return {k: tags[k] for k in CONTEXT_TAGS if tags.get(k)}
