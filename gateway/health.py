"""Counters and gauges for every stage, owned by one gateway instance (no module state)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Health:
    received: int = 0
    normalised: int = 0
    spooled: int = 0
    refused: int = 0  # turned away for good: sources that cannot wait, spool full or its disk
    dead_lettered: Counter[str] = field(default_factory=Counter)  # by source
    delivered: Counter[str] = field(default_factory=Counter)  # by sink
    retried: Counter[str] = field(default_factory=Counter)
    quarantined: Counter[str] = field(default_factory=Counter)
    sink_errors: dict[str, str] = field(default_factory=dict)  # last error per sink
    gaps: int = 0
    connections: dict[str, str] = field(default_factory=dict)  # adapter -> state
    devices: dict[tuple[str, str], str] = field(default_factory=dict)  # (adapter, device) -> state
    # machine contexts the MES link refused on arrival, by reason (read from the link)
    context_refused: Callable[[], dict[str, int]] = dict
    # the spool's disk: None while writes succeed, else why they fail ("disk full: …");
    # while set the pipeline acknowledges nothing and adapters hold back (issue 14)
    spool_disk_error: str | None = None
    # background tasks that ended with an exception and were restarted, by task name
    task_failures: Counter[str] = field(default_factory=Counter)
    # last time.monotonic_ns() each background task showed life ("pipeline", "sink:<name>",
    # "heartbeat"): /healthz and the systemd watchdog read them, never the tasks themselves
    beats: dict[str, int] = field(default_factory=dict)

    def snapshot(self) -> dict[str, object]:
        return {
            "received": self.received,
            "normalised": self.normalised,
            "spooled": self.spooled,
            "refused": self.refused,
            "dead_lettered": dict(self.dead_lettered),
            "delivered": dict(self.delivered),
            "retried": dict(self.retried),
            "quarantined": dict(self.quarantined),
            "sink_errors": dict(self.sink_errors),
            "gaps": self.gaps,
            "connections": dict(self.connections),
            "devices": {f"{a}/{d}": s for (a, d), s in self.devices.items()},
            "context_refused": self.context_refused(),
            "spool_disk_error": self.spool_disk_error,
            "task_failures": dict(self.task_failures),
        }
