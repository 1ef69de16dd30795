"""The audit trail's store: who did what from where, bounded against floods and in time.

IEC 62443-4-2 CR 2.8 (auditable events: every authentication failure, every write, with
actor, source address, object and result) and CR 2.9 (audit storage capacity: warn before
it fills). Three bounds keep an attacker from filling the disk:

- refusals of unauthenticated requests (wrong password, bad token, rate-limited, anonymous
  writes) are recorded in full only for the first :data:`FLOOD_ROWS` per
  :data:`FLOOD_WINDOW_S`; the rest of the window becomes one summary row (counts per address
  and per user name);
- rows older than ``audit_retention_days`` are deleted at start and every
  :data:`PRUNE_EVERY_S`;
- at ``audit_max_rows`` the oldest rows are dropped (a MES that stops recording, or stops
  working, because its audit store is full helps no one); at 80 % a warning is logged once
  and ``/api/v1/metrics`` shows the fill ratio, so an admin can export and act before that.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import CursorResult, Delete, delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from microfactory.mes.models import AuditEntry

log = logging.getLogger(__name__)

FLOOD_WINDOW_S = 60.0
FLOOD_ROWS = 30  # full rows of unauthenticated refusals per window; then one summary row
SUMMARY_KEYS = 10  # addresses / user names named in a summary row
COUNTER_KEYS = 1000  # distinct addresses / names counted per window (the rest: "other")
PRUNE_EVERY_S = 600.0
WARN_AT = 0.8
KEEP_WHEN_FULL = 0.95  # a full store is cut to this share: not one delete per new row
USERNAME_CHARS = 64
DETAIL_CHARS = 200

Capacity = Literal["ok", "warning", "full"]


@dataclass
class AuditRow:
    """One row to write; strings are cut to their columns here, never by the database."""

    username: str
    action: str
    status_code: int
    result: str
    address: str | None = None
    entity: str | None = None
    entity_id: str | None = None
    detail: dict[str, Any] | None = None

    def entry(self) -> AuditEntry:
        return AuditEntry(
            username=self.username[:USERNAME_CHARS],
            action=self.action[:200],
            entity=None if self.entity is None else self.entity[:64],
            entity_id=None if self.entity_id is None else self.entity_id[:64],
            status_code=self.status_code,
            result=self.result[:16],
            detail=_bounded(self.detail),
            address=None if self.address is None else self.address[:64],
        )


def _bounded(detail: dict[str, Any] | None) -> dict[str, Any] | None:
    if detail is None:
        return None
    return {
        str(k)[:64]: v[:DETAIL_CHARS] if isinstance(v, str) else v
        for k, v in list(detail.items())[:32]
    }


def _deleted(session: Session, statement: Delete) -> int:
    result = cast(CursorResult[Any], session.execute(statement))
    return result.rowcount or 0


@dataclass
class _FloodWindow:
    started: float
    started_at: datetime
    written: int = 0
    suppressed: int = 0
    by_address: Counter[str] = field(default_factory=Counter)
    by_username: Counter[str] = field(default_factory=Counter)

    def count(self, row: AuditRow) -> None:
        self.suppressed += 1
        for counter, key in (
            (self.by_address, row.address or "?"),
            (self.by_username, row.username[:USERNAME_CHARS]),
        ):
            if key in counter or len(counter) < COUNTER_KEYS:
                counter[key] += 1
            else:
                counter["(other)"] += 1

    def summary(self) -> AuditRow:
        top_address = self.by_address.most_common(1)[0][0]
        return AuditRow(
            username="(flood summary)",
            action="unauthenticated refusals not recorded one by one",
            status_code=429,
            result="suppressed",
            address=top_address,
            entity="auth",
            detail={
                "suppressed": self.suppressed,
                "window_start": self.started_at.isoformat(),
                "window_s": FLOOD_WINDOW_S,
                "recorded_in_full": self.written,
                "by_address": dict(self.by_address.most_common(SUMMARY_KEYS)),
                "addresses": len(self.by_address),
                "by_username": dict(self.by_username.most_common(SUMMARY_KEYS)),
                "usernames": len(self.by_username),
            },
        )


class AuditTrail:
    """Writes audit rows; one per app. Thread-safe (rows are written from worker threads)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        retention_days: int,
        max_rows: int,
        clock: Any = time.monotonic,
    ) -> None:
        self._sessions = sessions
        self.retention_days = retention_days
        self.max_rows = max_rows
        self._clock = clock
        self._lock = threading.Lock()
        self._window: _FloodWindow | None = None
        self._queue: list[AuditRow] = []  # refusals for the writer: bounded by the flood bound
        self._queued = threading.Condition(self._lock)
        self._writer: threading.Thread | None = None
        self._writing = False
        self._last_prune = float("-inf")
        self.rows = 0
        self.capacity: Capacity = "ok"
        self.written = 0
        self.suppressed = 0
        self.dropped = 0  # deleted because the store was full
        self.expired = 0  # deleted by retention
        self.write_errors = 0

    # --- writing

    def write(self, row: AuditRow) -> None:
        """An authenticated action (a write, refused or not): always recorded."""
        self._store([row])

    def refusal(self, row: AuditRow) -> None:
        """An unauthenticated refusal: recorded in full up to the flood bound, then counted."""
        now = self._clock()
        rows: list[AuditRow] = []
        with self._lock:
            window = self._window
            if window is None or now - window.started >= FLOOD_WINDOW_S:
                if window is not None and window.suppressed:
                    rows.append(window.summary())
                window = self._window = _FloodWindow(now, datetime.now(UTC))
            if window.written < FLOOD_ROWS:
                window.written += 1
                rows.append(row)
            else:
                if window.suppressed == 0:
                    log.warning(
                        "audit: more than %d unauthenticated refusals in %.0f s; "
                        "the rest of the window is counted in one summary row",
                        FLOOD_ROWS,
                        FLOOD_WINDOW_S,
                    )
                window.count(row)
                self.suppressed += 1
            if rows:
                self._queue.extend(rows)
                self._queued.notify_all()
                if self._writer is None:
                    self._writer = threading.Thread(
                        target=self._write_queue, name="mes-audit-writer", daemon=True
                    )
                    self._writer.start()

    def _write_queue(self) -> None:
        """Refusals are written by this one thread, a batch per transaction: forty refused
        requests at once must not take forty pooled connections (and the threads waiting for
        SQLite's write lock) from ``/health`` and the rest of the MES."""
        while True:
            with self._lock:
                while not self._queue:
                    self._queued.wait()
                rows, self._queue = self._queue, []
                self._writing = True
            try:
                self._store(rows)
            finally:
                with self._lock:
                    self._writing = False
                    self._queued.notify_all()

    def drain(self, timeout_s: float = 10.0) -> None:
        """Wait until queued refusals are written (a reader of the trail sees them all)."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            while self._queue or self._writing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                self._queued.wait(left)

    def flush(self, force: bool = False) -> None:
        """Write the summary of a flood window that has ended (by the housekeeping), or of
        the current one (``force``: at shutdown)."""
        with self._lock:
            window = self._window
            if window is None or (not force and self._clock() - window.started < FLOOD_WINDOW_S):
                return
            self._window = None
        if window.suppressed:
            self._store([window.summary()])
        if force:
            self.drain()

    def _store(self, rows: list[AuditRow]) -> None:
        try:
            with self._sessions() as session:
                session.add_all([row.entry() for row in rows])
                session.commit()
        except Exception:
            self.write_errors += 1
            if self.write_errors == 1 or self.write_errors % 1000 == 0:
                log.exception("audit row not written (%d so far)", self.write_errors)
            return
        with self._lock:
            self.rows += len(rows)
            self.written += len(rows)
            full = self.rows >= self.max_rows
        if full:
            self.housekeep(force=True)
        else:
            self._update_capacity()

    # --- retention and capacity

    def housekeep(self, *, force: bool = False) -> None:
        """Retention, then capacity; cheap when nothing is due (call it as often as you like)."""
        now = self._clock()
        if not force and now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        cutoff = datetime.now(UTC) - timedelta(days=self.retention_days)
        with self._sessions() as session:
            expired = _deleted(session, delete(AuditEntry).where(AuditEntry.ts < cutoff))
            rows = session.scalar(select(func.count()).select_from(AuditEntry)) or 0
            dropped = 0
            if rows > self.max_rows:
                # keep the newest rows: ids grow with time
                keep_from = session.scalar(
                    select(AuditEntry.id)
                    .order_by(AuditEntry.id.desc())
                    .offset(int(self.max_rows * KEEP_WHEN_FULL) - 1)
                    .limit(1)
                )
                dropped = _deleted(session, delete(AuditEntry).where(AuditEntry.id < keep_from))
                rows -= dropped
            session.commit()
        with self._lock:
            self.rows = rows
            self.expired += expired or 0
            self.dropped += dropped or 0
        if expired:
            log.info("audit: %d rows older than %d days deleted", expired, self.retention_days)
        if dropped:
            log.error(
                "audit store full (%d rows): the %d oldest rows were deleted; export the "
                "audit trail and raise audit_max_rows or lower audit_retention_days",
                self.max_rows,
                dropped,
            )
        self._update_capacity()

    @property
    def fill(self) -> float:
        return self.rows / self.max_rows

    def _update_capacity(self) -> None:
        state: Capacity = (
            "full" if self.rows >= self.max_rows else "warning" if self.fill >= WARN_AT else "ok"
        )
        if state == self.capacity:
            return
        previous, self.capacity = self.capacity, state
        if state == "ok":
            log.info("audit store back to %.0f %% of %d rows", 100 * self.fill, self.max_rows)
        else:
            log.warning(
                "audit store %s: %d of %d rows (%.0f %%), was %s; export the audit trail, "
                "then raise audit_max_rows or lower audit_retention_days",
                state,
                self.rows,
                self.max_rows,
                100 * self.fill,
                previous,
            )

    def metrics(self) -> dict[str, float]:
        """Figures for ``/api/v1/metrics`` (Prometheus text)."""
        return {
            "rows": self.rows,
            "max_rows": self.max_rows,
            "fill_ratio": round(self.fill, 6),
            "capacity_warning": 1.0 if self.capacity != "ok" else 0.0,
            "written_total": self.written,
            "suppressed_total": self.suppressed,
            "dropped_total": self.dropped,
            "expired_total": self.expired,
            "write_errors_total": self.write_errors,
        }
