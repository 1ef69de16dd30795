"""The exact ground truth of a simulated run, written as JSONL so tests can check any consumer.

Lines are flushed one by one so a test can read the files right after :meth:`Workshop.stop`
(or even while the workshop runs) without waiting for a buffer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from .model import PartCompleted, StateChanged

CounterSignal = Literal["energy_active", "part_count", "good_count", "scrap_count"]

PARTS_FILE = "parts.jsonl"
STATES_FILE = "states.jsonl"
PUBLISHED_FILE = "published.jsonl"
SUMMARY_FILE = "summary.json"


class TruthRecorder:
    """Append-only writer of the ground-truth files of one run."""

    def __init__(self, truth_dir: Path) -> None:
        self.truth_dir = truth_dir
        truth_dir.mkdir(parents=True, exist_ok=True)
        self._parts = (truth_dir / PARTS_FILE).open("ab")
        self._states = (truth_dir / STATES_FILE).open("ab")
        self._published = (truth_dir / PUBLISHED_FILE).open("ab")

    def part(self, machine: str, event: PartCompleted) -> None:
        self._write(
            self._parts,
            {
                "machine": machine,
                "part_count": event.part_count,
                "start_ns": event.start_ns,
                "end_ns": event.ts_ns,
                "window_start_ns": event.window_start_ns,
                "good": event.good,
                "energy_wh": event.energy_wh,
                "energy_counter_wh": event.energy_counter_wh,
                "cycle_time_s": event.cycle_time_s,
                "program": event.snapshot.program,
            },
        )

    def state(self, machine: str, event: StateChanged) -> None:
        self._write(
            self._states,
            {
                "machine": machine,
                "ts_ns": event.ts_ns,
                "state": event.state,
                "previous": event.previous,
                "program": event.snapshot.program,
            },
        )

    def published(self, machine: str, ts_ns: int, signal: CounterSignal, value: float) -> None:
        self._write(
            self._published,
            {"machine": machine, "ts_ns": ts_ns, "signal": signal, "value": value},
        )

    def summary(self, summary: Mapping[str, Any]) -> None:
        (self.truth_dir / SUMMARY_FILE).write_bytes(
            orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
        )

    def close(self) -> None:
        for f in (self._parts, self._states, self._published):
            f.close()

    @staticmethod
    def _write(f: IO[bytes], record: Mapping[str, Any]) -> None:
        f.write(orjson.dumps(record) + b"\n")
        f.flush()


# ---------------------------------------------------------------------- reading it back
@dataclass(frozen=True, slots=True)
class PartRecord:
    machine: str
    part_count: int
    start_ns: int
    end_ns: int
    window_start_ns: int
    good: bool
    energy_wh: float
    energy_counter_wh: float
    cycle_time_s: float
    program: str


@dataclass(frozen=True, slots=True)
class StateRecord:
    machine: str
    ts_ns: int
    state: str
    previous: str | None
    program: str


@dataclass(frozen=True, slots=True)
class PublishedRecord:
    machine: str
    ts_ns: int
    signal: str
    value: float


@dataclass(frozen=True, slots=True)
class GroundTruth:
    parts: list[PartRecord]
    states: list[StateRecord]
    published: list[PublishedRecord]
    summary: dict[str, Any] = field(default_factory=dict)

    def parts_of(self, machine: str) -> list[PartRecord]:
        return [p for p in self.parts if p.machine == machine]

    def states_of(self, machine: str) -> list[StateRecord]:
        return [s for s in self.states if s.machine == machine]

    def published_of(self, machine: str, signal: str) -> list[PublishedRecord]:
        return [p for p in self.published if p.machine == machine and p.signal == signal]


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    for line in path.read_bytes().splitlines():
        if line.strip():
            rows.append(orjson.loads(line))
    return rows


def load_truth(truth_dir: Path) -> GroundTruth:
    """Read back what a run wrote; ``summary`` is empty until the workshop has stopped."""
    summary_path = truth_dir / SUMMARY_FILE
    summary: dict[str, Any] = (
        orjson.loads(summary_path.read_bytes()) if summary_path.exists() else {}
    )
    return GroundTruth(
        parts=[PartRecord(**r) for r in _read_jsonl(truth_dir / PARTS_FILE)],
        states=[StateRecord(**r) for r in _read_jsonl(truth_dir / STATES_FILE)],
        published=[PublishedRecord(**r) for r in _read_jsonl(truth_dir / PUBLISHED_FILE)],
        summary=summary,
    )
