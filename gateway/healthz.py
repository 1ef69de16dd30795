"""``/healthz``: one up/down answer with named reasons, for a watchdog, a load balancer, a person.

Read from :class:`Health` (in-process fields other tasks update) and from the spool file
through a read-only connection of its own, never through the event loop: it answers while
the loop is stuck, which is when it matters. Thresholds live in :class:`Thresholds`.
"""

from __future__ import annotations

import shutil
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from .health import Health

Reason = dict[str, object]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When a condition turns into a reason: the one place for these numbers."""

    sink_down_s: float = 60.0  # a sink failing this long
    adapter_down_s: float = 120.0  # an adapter not connected this long
    task_stall_s: float = 30.0  # a background task's beat older than this
    task_failure_window_s: float = 300.0  # a task restarted after a crash this recently
    spool_age_ratio: float = 0.5  # oldest undelivered sample older than this times spool.max_age_s
    disk_min_bytes: int = 50 * 1024 * 1024  # free space on the spool's filesystem below this
    disk_min_ratio: float = 0.01  # … or below this share of the filesystem


@dataclass
class HealthCheck:
    """Evaluates the gateway's health; remembers since when each condition holds."""

    health: Health
    spool_path: Path
    sinks: list[str]
    spool_max_age_s: float
    thresholds: Thresholds = field(default_factory=Thresholds)
    _since: dict[str, float] = field(default_factory=dict)  # condition key -> wall time first seen
    _failures: dict[str, tuple[int, float]] = field(default_factory=dict)  # task -> (count, when)

    def _seen(self, key: str, now: float) -> float:
        return self._since.setdefault(key, now)

    def _oldest_ages(self, now: float) -> dict[str, float]:
        db = sqlite3.connect(f"file:{self.spool_path}?mode=ro", uri=True, timeout=1.0)
        try:
            cursors = dict(db.execute("SELECT sink, seq FROM cursors").fetchall())
            ages = {}
            for sink in self.sinks:
                row = db.execute(
                    "SELECT spooled_s FROM samples WHERE seq > ? ORDER BY seq LIMIT 1",
                    (cursors.get(sink, 0),),
                ).fetchone()
                ages[sink] = now - float(row[0]) if row else 0.0
            return ages
        finally:
            db.close()

    def report(self) -> tuple[int, dict[str, object]]:
        """(HTTP status, body): 200 ``{"status": "ok", …}`` or 503 ``{"status": "down", …}``."""
        t = self.thresholds
        h = self.health
        now = time.time()
        mono = time.monotonic_ns()
        reasons: list[Reason] = []
        active: set[str] = set()

        def cond(key: str, name: str, detail: str, after_s: float = 0.0) -> None:
            active.add(key)
            since = self._seen(key, now)
            if now - since >= after_s:
                reasons.append({"name": name, "detail": detail, "since": round(since, 3)})

        if h.spool_disk_error is not None:
            cond("spool_disk_full", "spool_disk_full", h.spool_disk_error)
        try:
            usage = shutil.disk_usage(self.spool_path.parent)
        except OSError as err:
            cond("disk_low", "disk_low", f"cannot read free space: {err}")
        else:
            floor = max(t.disk_min_bytes, int(usage.total * t.disk_min_ratio))
            if usage.free < floor:
                cond(
                    "disk_low",
                    "disk_low",
                    f"{usage.free // (1024 * 1024)} MiB free on {self.spool_path.parent} "
                    f"(below {floor // (1024 * 1024)} MiB)",
                )
        spool: dict[str, object] = {}
        try:
            ages = self._oldest_ages(now)
        except sqlite3.Error as err:
            cond("spool_unreadable", "spool_unreadable", str(err))
        else:
            limit = t.spool_age_ratio * self.spool_max_age_s
            for sink, age in ages.items():
                spool[sink] = {"oldest_age_s": round(age, 3)}
                if age > limit:
                    cond(
                        f"spool_age:{sink}",
                        "spool_age",
                        f"sink {sink}: oldest undelivered sample is {age:.0f} s old "
                        f"(limit {limit:.0f} s, spool.max_age_s {self.spool_max_age_s:.0f})",
                    )
        for sink, error in sorted(h.sink_errors.items()):
            cond(f"sink_down:{sink}", "sink_down", f"sink {sink}: {error}", t.sink_down_s)
        for adapter, state in sorted(h.connections.items()):
            if state != "connected":
                cond(
                    f"adapter_down:{adapter}:{state}",
                    "adapter_down",
                    f"adapter {adapter} is {state}",
                    t.adapter_down_s,
                )
        for task, beat in sorted(h.beats.items()):
            age_s = (mono - beat) / 1e9
            if age_s > t.task_stall_s:
                reasons.append(
                    {
                        "name": "task_stalled",
                        "detail": f"task {task} showed no life for {age_s:.0f} s",
                        "since": round(now - age_s, 3),
                    }
                )
        for task, count in sorted(h.task_failures.items()):
            last = self._failures.get(task)
            if last is None or last[0] != count:
                self._failures[task] = (count, now)
            when = self._failures[task][1]
            if now - when < t.task_failure_window_s:
                reasons.append(
                    {
                        "name": "task_failures",
                        "detail": f"task {task} crashed and was restarted ({count} times)",
                        "since": round(when, 3),
                    }
                )
        for key in set(self._since) - active:  # a condition that cleared starts afresh
            del self._since[key]
        body: dict[str, object] = {
            "status": "down" if reasons else "ok",
            "reasons": reasons,
            "spool": spool,
            "adapters": dict(h.connections),
            "sinks": {s: ("down" if s in h.sink_errors else "up") for s in self.sinks},
            "time": round(now, 3),
        }
        return (503 if reasons else 200), body

    def pipeline_moves(self) -> bool:
        """True while the pipeline's beat is fresh and the spool file answers a read.

        What the systemd watchdog is fed on: a live thread proves nothing.
        """
        beat = self.health.beats.get("pipeline")
        if beat is None or (time.monotonic_ns() - beat) / 1e9 > self.thresholds.task_stall_s:
            return False
        try:
            db = sqlite3.connect(f"file:{self.spool_path}?mode=ro", uri=True, timeout=1.0)
            try:
                db.execute("SELECT count(*) FROM cursors").fetchone()
            finally:
                db.close()
        except sqlite3.Error:
            return False
        return True
