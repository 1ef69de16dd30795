"""The gateway's event derivation (pure): states, parts, energy per part, resets, replays."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

from microfactory.contract import GapReported, PartCompleted, StateChanged
from microfactory.gateway.events import EventDeriver, event_id
from microfactory.gateway.sample import Sample

S = 1_000_000_000
T0 = 1_700_000_000 * S
CTX = {"order": "SO-1", "batch": "SO-1-01", "operation": "10:cut"}


def smp(signal: str, value: float | str, t_s: float, machine: str = "m1") -> Sample:
    return Sample(machine, signal, value, "", T0 + int(t_s * S), "good", dict(CTX))


def instant(t_s: float, parts: int, good: int, scrap: int, wh: float) -> list[Sample]:
    """What a machine shows at one instant: all counters with the same source time."""
    return [
        smp("part_count", float(parts), t_s),
        smp("good_count", float(good), t_s),
        smp("scrap_count", float(scrap), t_s),
        smp("energy_active", wh, t_s),
    ]


def parts_of(events: Sequence[object]) -> list[PartCompleted]:
    return [e for e in events if isinstance(e, PartCompleted)]


def test_state_changes_carry_previous_state_and_context() -> None:
    d = EventDeriver("site1")
    events = d.feed(
        [smp("state", "setup", 0), smp("state", "setup", 1), smp("state", "running", 5)]
    )
    assert [(e.state, e.previous) for e in events if isinstance(e, StateChanged)] == [
        ("setup", None),
        ("running", "setup"),
    ]
    assert events[1].batch == "SO-1-01" and events[1].order == "SO-1"
    assert events[1].event_id == f"site1/m1/state/{T0 + 5 * S}/running"


def test_part_energy_is_the_counter_difference_between_completions() -> None:
    d = EventDeriver("site1")
    events = d.feed(
        [
            smp("state", "running", 0),
            *instant(0, 10, 9, 1, 100.0),  # baseline
            *instant(20, 11, 10, 1, 150.0),
            smp("energy_active", 160.0, 25),
            *instant(41, 12, 10, 2, 230.5),
        ]
    )
    parts = parts_of(events)
    assert [(p.part_count, p.good) for p in parts] == [(11, True), (12, False)]
    # the first part after the baseline has no previous completion to measure from
    assert parts[0].energy_wh is None
    assert parts[1].energy_wh == pytest.approx(80.5)
    assert parts[1].cycle_time_s == pytest.approx(21.0)
    assert parts[1].batch == "SO-1-01"


def test_counters_of_one_instant_in_any_order() -> None:
    """OPC UA monitored items of one instant arrive in any order; the part waits for them."""
    d = EventDeriver("site1")
    d.feed(instant(0, 0, 0, 0, 0.0) + instant(10, 1, 1, 0, 10.0))
    late_energy = [
        smp("part_count", 2.0, 20),
        smp("scrap_count", 1.0, 20),
    ]
    assert parts_of(d.feed(late_energy)) == []  # energy and good of t=20 not seen yet
    events = d.feed([smp("good_count", 1.0, 20), smp("energy_active", 25.0, 20)])
    (part,) = parts_of(events)
    assert part.part_count == 2 and part.good is False
    assert part.energy_wh == pytest.approx(15.0)


def test_unchanged_counters_are_not_waited_for() -> None:
    """OPC UA reports changes only: at a good part the scrap counter is not sent again."""
    d = EventDeriver("site1")
    d.feed(instant(0, 0, 0, 0, 0.0) + instant(10, 1, 1, 0, 10.0))
    events = d.feed(
        [smp("part_count", 2.0, 20), smp("good_count", 2.0, 20), smp("energy_active", 30.0, 20)]
    )
    (part,) = parts_of(events)
    assert part.good is True and part.energy_wh == pytest.approx(20.0)
    assert part.cycle_time_s == pytest.approx(10.0)


def test_energy_counter_reset_on_power_loss_is_bridged() -> None:
    d = EventDeriver("site1")
    events = d.feed(
        instant(0, 5, 5, 0, 0.0)
        + instant(10, 6, 6, 0, 400.0)
        + [smp("energy_active", 430.0, 15)]  # held while the machine is off
        + [smp("state", "off", 15), smp("state", "idle", 80)]
        + [smp("energy_active", 0.0, 80)]  # controller restarts with a zeroed counter
        + [smp("energy_active", 12.0, 90)]
        + instant(100, 7, 7, 0, 20.0)
    )
    part = parts_of(events)[-1]
    assert part.part_count == 7
    assert part.energy_wh == pytest.approx(30.0 + 20.0)
    assert d.machines["m1"].resets == 1


def test_counter_jump_gives_parts_without_guessed_energy() -> None:
    d = EventDeriver("site1")
    events = d.feed(instant(0, 1, 1, 0, 0.0) + instant(10, 4, 3, 1, 30.0))
    parts = parts_of(events)
    assert [p.part_count for p in parts] == [2, 3, 4]
    assert all(p.energy_wh is None and p.cycle_time_s is None for p in parts)
    assert [p.good for p in parts] == [True, True, False]
    assert len({p.event_id for p in parts}) == 3


def test_interpolates_energy_between_samples_when_the_instant_has_none() -> None:
    d = EventDeriver("site1")
    d.feed([smp("part_count", 0.0, 0), smp("energy_active", 0.0, 0)])
    d.feed([smp("part_count", 1.0, 10), smp("energy_active", 50.0, 10)])
    events = d.feed(
        [smp("part_count", 2.0, 20), smp("energy_active", 90.0, 18), smp("energy_active", 110, 22)]
    )
    (part,) = parts_of(events)
    assert part.energy_wh == pytest.approx(50.0)  # 100 Wh at t=20, linear between 18 and 22


def test_part_without_energy_counter_is_released_at_once() -> None:
    d = EventDeriver("site1")
    d.feed([smp("part_count", 3.0, 0)])
    (part,) = parts_of(d.feed([smp("part_count", 4.0, 30)]))
    assert part.energy_wh is None and part.good is None


def test_missing_counter_holds_the_part_only_for_hold_s() -> None:
    d = EventDeriver("site1", hold_s=60)
    d.feed(instant(0, 0, 0, 0, 0.0))
    assert parts_of(d.feed([smp("part_count", 1.0, 10)])) == []
    assert parts_of(d.feed([smp("part_count", 1.0, 50)])) == []
    (part,) = parts_of(d.feed([smp("part_count", 1.0, 71)]))
    assert part.part_count == 1


def test_replay_gives_the_same_event_ids_and_dump_load_continues() -> None:
    batch1 = [smp("state", "running", 0), *instant(0, 0, 0, 0, 0.0), *instant(10, 1, 1, 0, 5.0)]
    batch2 = [*instant(20, 2, 2, 0, 11.0), smp("state", "idle", 21)]
    a = EventDeriver("s")
    first = a.feed(batch1)
    saved = json.loads(json.dumps(a.dump()))
    rest = a.feed(batch2)
    b = EventDeriver("s")
    b.load(saved)
    assert [e.event_id for e in b.feed(batch2)] == [e.event_id for e in rest]
    # a fresh deriver on the whole stream derives the same ids again
    c = EventDeriver("s")
    assert [e.event_id for e in c.feed(batch1 + batch2)] == [e.event_id for e in first + rest]
    assert parts_of(rest)[0].energy_wh == pytest.approx(6.0)


def test_repeated_and_older_samples_change_nothing() -> None:
    d = EventDeriver("s")
    d.feed(instant(0, 0, 0, 0, 0.0) + instant(10, 1, 1, 0, 5.0))
    again = d.feed(instant(10, 1, 1, 0, 5.0) + instant(5, 1, 1, 0, 2.0))
    assert again == []


def test_gap_marker_becomes_gap_event() -> None:
    d = EventDeriver("s")
    gap = Sample("m1", "gap", f"server unreachable (from {T0})", "", T0 + 30 * S, "bad")
    (ev,) = d.feed([gap])
    assert isinstance(ev, GapReported)
    assert ev.start_ns == T0 and ev.ts_ns == T0 + 30 * S and ev.reason == "server unreachable"


def test_event_id_stays_within_the_contract_length() -> None:
    long = event_id("s" * 64, "m" * 64, "part", T0, 1)
    assert len(long) <= 128 and long == event_id("s" * 64, "m" * 64, "part", T0, 1)


def states_of(events: Sequence[object]) -> list[StateChanged]:
    return [e for e in events if isinstance(e, StateChanged)]


def test_state_change_carries_the_energy_of_the_state_that_ended() -> None:
    d = EventDeriver("site1")
    events = d.feed(
        [
            smp("energy_active", 100.0, 0),
            smp("state", "setup", 0),
            smp("energy_active", 112.0, 30),
            smp("state", "running", 30),
            smp("energy_active", 150.0, 40),
            smp("state", "idle", 50),  # no counter at this instant: interpolated 150..170
            smp("energy_active", 170.0, 60),
        ]
    )
    setup, running, idle = states_of(events)
    assert setup.previous_since_ns is None and setup.previous_energy_wh is None
    assert running.previous == "setup" and running.previous_since_ns == T0
    assert running.previous_energy_wh == pytest.approx(12.0)
    assert idle.previous_since_ns == T0 + 30 * S
    assert idle.previous_energy_wh == pytest.approx(160.0 - 112.0)
    # the ids stay what they were before states carried energy
    assert idle.event_id == f"site1/m1/state/{T0 + 50 * S}/idle"


def test_state_change_waits_for_the_energy_counter_of_its_instant() -> None:
    """Counters of one instant may follow the state: the change is held, then released."""
    d = EventDeriver("site1")
    d.feed([smp("energy_active", 0.0, 0), smp("state", "running", 0)])
    assert states_of(d.feed([smp("state", "idle", 20)])) == []
    (idle,) = states_of(d.feed([smp("energy_active", 40.0, 20)]))
    assert idle.previous_energy_wh == pytest.approx(40.0)


def test_state_energy_unknown_until_the_counter_is_first_read() -> None:
    """The first interval: the gateway saw the state before any counter reading."""
    d = EventDeriver("site1")
    events = d.feed(
        [
            smp("state", "setup", 0),
            smp("state", "running", 20),
            smp("energy_active", 500.0, 25),  # the first reading, well inside running
            smp("energy_active", 520.0, 30),
            smp("state", "idle", 30),
            smp("state", "running", 40),
            smp("energy_active", 545.0, 40),
        ]
    )
    _setup, running, idle, again = states_of(events)
    # nothing was read in setup: its energy is unknown, not guessed
    assert running.previous_since_ns == T0 and running.previous_energy_wh is None
    assert running.previous_energy_from_ns is None
    # running is known from its first reading on, and says from when
    assert idle.previous_since_ns == T0 + 20 * S
    assert idle.previous_energy_from_ns == T0 + 25 * S
    assert idle.previous_energy_wh == pytest.approx(20.0)
    assert again.previous_energy_wh == pytest.approx(25.0)
    assert again.previous_energy_from_ns is None


def test_state_energy_bridges_a_counter_reset() -> None:
    d = EventDeriver("site1")
    events = d.feed(
        [
            smp("energy_active", 400.0, 0),
            smp("state", "running", 0),
            smp("energy_active", 430.0, 15),
            smp("state", "off", 15),
            smp("state", "idle", 80),
            smp("energy_active", 0.0, 80),  # the controller restarts with a zeroed counter
            smp("energy_active", 12.0, 90),
            smp("state", "setup", 100),
            smp("energy_active", 20.0, 100),
        ]
    )
    _running, off, idle, setup = states_of(events)
    assert off.previous == "running" and off.previous_energy_wh == pytest.approx(30.0)
    assert idle.previous == "off" and idle.previous_energy_wh == pytest.approx(0.0)
    assert setup.previous == "idle" and setup.previous_energy_wh == pytest.approx(20.0)
    assert d.machines["m1"].resets == 1


def test_state_without_energy_counter_is_released_at_once_and_held_only_for_hold_s() -> None:
    d = EventDeriver("site1", hold_s=60)
    assert len(states_of(d.feed([smp("state", "running", 0)]))) == 1  # no counter at all
    d.feed([smp("energy_active", 5.0, 1)])
    assert states_of(d.feed([smp("state", "fault", 10)])) == []
    assert states_of(d.feed([smp("power_active", 100.0, 50)])) == []
    (fault,) = states_of(d.feed([smp("power_active", 100.0, 71)]))
    assert fault.previous_energy_wh is None  # the counter never reached the change


def test_states_and_parts_leave_in_time_order_and_replay_the_same() -> None:
    stream = [
        smp("state", "running", 0),
        *instant(0, 0, 0, 0, 0.0),
        smp("state", "idle", 10),
        *instant(10, 1, 1, 0, 10.0),
        smp("state", "running", 15),
        smp("energy_active", 11.0, 15),
        *instant(25, 2, 2, 0, 30.0),
    ]
    a = EventDeriver("s")
    first = a.feed(stream[:6])
    saved = json.loads(json.dumps(a.dump()))
    rest = a.feed(stream[6:])
    kinds = [(e.kind, e.ts_ns) for e in first + rest]
    assert kinds == sorted(kinds, key=lambda k: k[1])
    b = EventDeriver("s")
    b.load(saved)
    again = b.feed(stream[6:])
    assert [e.model_dump() for e in again] == [e.model_dump() for e in rest]
    c = EventDeriver("s")
    assert [e.model_dump() for e in c.feed(stream)] == [e.model_dump() for e in first + rest]
