"""Durable store-and-forward between the pipeline and the sinks (SQLite in WAL mode).

A sample is acknowledged upstream only after the transaction holding it has committed, so an
acknowledged sample survives a crash of the gateway (``durability: full`` also survives a
power cut). Each sink reads from its own cursor, so a dead sink never blocks a live one; a
row is deleted once every sink has passed it, or when the quota or the maximum age forces
it out, and then every sample a sink had not yet received is counted as dropped for it.

All SQLite work runs on one dedicated thread: the event loop never blocks on disk, and one
connection means no lock contention between writers.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from .config import SpoolSettings
from .sample import Sample

T = TypeVar("T")
log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    spooled_s REAL NOT NULL,
    ts_ns INTEGER NOT NULL,
    machine TEXT NOT NULL,
    signal TEXT NOT NULL,
    value REAL,
    text TEXT,
    unit TEXT NOT NULL,
    quality TEXT NOT NULL,
    tags TEXT
);
CREATE TABLE IF NOT EXISTS cursors (sink TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS heartbeat (id INTEGER PRIMARY KEY CHECK (id = 1), alive_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    at_s REAL NOT NULL,
    source TEXT NOT NULL,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    payload BLOB
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY,
    at_s REAL NOT NULL,
    sink TEXT NOT NULL,
    reason TEXT NOT NULL,
    line TEXT NOT NULL
);
"""

MAX_DEAD_LETTER_PAYLOAD = 64 * 1024


# SQLite primary result codes that mean the disk under the spool, not our SQL, is the trouble
_SQLITE_DISK = {8: "read-only", 10: "I/O error", 13: "disk full", 14: "cannot open"}
_OS_DISK = {errno.ENOSPC: "disk full", errno.EDQUOT: "disk quota", errno.EROFS: "read-only"}


class SpoolDiskError(Exception):
    """A write to the spool failed because of its disk (full, read-only, I/O error).

    Nothing of the failed operation was committed; ``reason`` is short and human, e.g.
    ``disk full: /var/lib/microfactory/spool.sqlite``. The caller holds what it wanted to
    write and tries again later: the state ends by itself when the disk has room again.
    """

    def __init__(self, reason: str, full: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.full = full  # out of space (ENOSPC / SQLITE_FULL), as opposed to another fault


def disk_error(err: BaseException, path: Path) -> SpoolDiskError | None:
    """The SpoolDiskError that ``err`` means, or None if it is not about the disk."""
    what: str | None = None
    if isinstance(err, sqlite3.Error):
        code = getattr(err, "sqlite_errorcode", None)
        if code is not None:
            what = _SQLITE_DISK.get(code & 0xFF)
        elif "disk is full" in str(err) or "disk I/O error" in str(err):
            what = "disk full" if "full" in str(err) else "I/O error"
    elif isinstance(err, OSError):
        what = _OS_DISK.get(err.errno or 0, "I/O error" if err.errno == errno.EIO else None)
    if what is None:
        return None
    return SpoolDiskError(f"{what}: {path} ({err})", full=what in ("disk full", "disk quota"))


class RateLimitedLog:
    """At most one line per ``every_s`` for a repeated event, carrying the count since the last.

    The first event is logged at once; later ones are summed and told with the next line,
    or by :meth:`flush` (called periodically) when the events stopped.
    """

    def __init__(self, logger: logging.Logger, level: int, every_s: float = 60.0) -> None:
        self._log = logger
        self._level = level
        self._every_s = every_s
        self._last = -1e18
        self._pending: dict[str, int] = {}

    def add(self, what: str, n: int, now: float | None = None) -> None:
        if n <= 0:
            return
        self._pending[what] = self._pending.get(what, 0) + n
        self.flush(now)

    def flush(self, now: float | None = None, *, force: bool = False) -> None:
        now = time.monotonic() if now is None else now
        if not self._pending or (not force and now - self._last < self._every_s):
            return
        parts = ", ".join(f"{n} {what}" for what, n in sorted(self._pending.items()))
        self._log.log(self._level, "%s", parts)
        self._pending.clear()
        self._last = now


class SpoolFull(Exception):
    """The quota is reached and the overflow policy is ``stop_accepting``.

    ``accepted`` samples at the head of the group were spooled before the quota was reached;
    the rest were refused (and counted).
    """

    def __init__(self, message: str, accepted: int = 0) -> None:
        super().__init__(message)
        self.accepted = accepted


@dataclass(slots=True)
class SpooledSample:
    seq: int
    sample: Sample


@dataclass(slots=True)
class SpoolStats:
    """A consistent picture of the spool; counters are totals since the spool was created."""

    rows: int = 0
    bytes: int = 0
    max_bytes: int = 0
    oldest_age_s: float = 0.0
    depth: dict[str, int] = field(default_factory=dict)  # samples a sink has yet to take
    oldest_age_by_sink: dict[str, float] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)  # quota + max age, per sink
    dropped_by_reason: dict[tuple[str, str], int] = field(default_factory=dict)  # (sink, why)
    delivered: dict[str, int] = field(default_factory=dict)
    quarantined: dict[str, int] = field(default_factory=dict)
    refused: int = 0  # samples the quota turned away, each offer counted
    appended: int = 0
    pruned: dict[str, int] = field(default_factory=dict)  # "dead_letters" / "quarantine"


class Spool:
    def __init__(self, settings: SpoolSettings, sinks: Sequence[str]) -> None:
        self._settings = settings
        self._sinks = list(sinks)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool")
        self._db: sqlite3.Connection | None = None
        self._cursors: dict[str, int] = {}
        self._last_seq = 0
        self._counters: dict[str, int] = {}
        self._appends_since_check = 0
        self._bytes = 0
        self._row_bytes = 100.0  # estimate between measurements, refined by each of them
        # stop_accepting: once the quota refused samples, refuse until rows leave the spool.
        # Measured bytes move in whole pages, so without this a later small group could slip
        # into the last page and the spool would keep samples after a hole.
        self._refusing = False
        self._last_age_check = 0.0
        # The batch a sink is writing (first, last seq), and drops that hit it meanwhile:
        # when the write then succeeds those samples were delivered after all, not dropped.
        self._inflight: dict[str, tuple[int, int]] = {}
        self._dropped_inflight: dict[str, list[tuple[str, int]]] = {}
        # Acks the disk refused (full): the sink has the samples, so the cursor moves in
        # memory and the durable record follows with the next ack that the disk takes.
        self._deferred: dict[
            str, tuple[int, int, list[tuple[str, str]], list[tuple[str, int]]]
        ] = {}
        self._drops = RateLimitedLog(log, logging.WARNING)
        self._last_prune = 0.0
        for sink in self._sinks:
            self._cursors[sink] = 0

    @property
    def is_open(self) -> bool:
        """False while the file could not be opened (a full disk at start): retried on use."""
        return self._db is not None

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        """Open the file; on a disk error raise SpoolDiskError and retry on each later use."""
        await self._call(self._open)

    async def close(self) -> None:
        await self._call(self._close)
        self._executor.shutdown(wait=True)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._guarded, fn, *args
        )

    def _guarded(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn`` on the spool thread; disk faults come out as SpoolDiskError."""
        try:
            return fn(*args)
        except (sqlite3.Error, OSError) as err:
            if self._db is not None and self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            disk = disk_error(err, Path(self._settings.path))
            if disk is None:
                raise
            raise disk from err

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One transaction; if it fails, the in-memory state is put back as it was."""
        db = self.db
        saved = (dict(self._counters), dict(self._cursors), self._last_seq, self._refusing)
        db.execute("BEGIN")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            self._counters, self._cursors, self._last_seq, self._refusing = saved
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            raise

    def _ensure_open(self) -> sqlite3.Connection:
        if self._db is None:
            self._open()
        return self.db

    def _open(self) -> None:
        if self._db is not None:
            return
        path = Path(self._settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._settings.durability.upper()}")
            db.executescript(_SCHEMA)
            self._load(db)
        except BaseException:
            db.close()
            raise
        self._db = db
        self._bytes = self._db_bytes()

    def _load(self, db: sqlite3.Connection) -> None:
        # AUTOINCREMENT keeps the highest seq ever used even when every row was trimmed, so
        # a restart never reuses a seq that a sink cursor has already passed.
        last = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
        self._counters = dict(db.execute("SELECT name, value FROM counters").fetchall())
        self._last_seq = int(last[0]) if last else 0
        stored = dict(db.execute("SELECT sink, seq FROM cursors").fetchall())
        first = db.execute("SELECT min(seq) FROM samples").fetchone()[0]
        for sink in self._sinks:
            # A new sink starts at the oldest row still spooled: it gets the whole backlog.
            self._cursors[sink] = int(stored.get(sink, (first or self._last_seq + 1) - 1))
            if sink not in stored:
                db.execute(
                    "INSERT OR IGNORE INTO cursors(sink, seq) VALUES (?, ?)",
                    (sink, self._cursors[sink]),
                )

    def _close(self) -> None:
        if self._db is not None:
            try:
                self._flush_deferred()
                self._trim()
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except (sqlite3.Error, OSError) as err:  # a full disk: what is committed stays
                log.warning("spool: closing without the final tidy-up: %s", err)
            self._db.close()
            self._db = None
        self._drops.flush(force=True)

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("spool is not open")
        return self._db

    # ----------------------------------------------------------------- writing
    async def append(self, samples: Sequence[Sample]) -> None:
        """Commit samples durably.

        With ``drop_oldest`` the oldest rows make room; with ``stop_accepting`` what does not
        fit is refused: SpoolFull says how many of the group were spooled.
        """
        if samples:
            await self._call(self._append, samples)

    def _append(self, samples: Sequence[Sample]) -> None:
        self._ensure_open()
        now = time.time()
        if now - self._last_age_check >= 1.0:
            self._last_age_check = now
            self._enforce_age()
        limit = self._settings.max_bytes
        refused = 0
        if self._refusing:
            refused, samples = len(samples), samples[:0]
        elif self._bytes + self._row_bytes * len(samples) >= limit:
            self._enforce_quota(incoming=len(samples))
            if self._settings.overflow == "stop_accepting":
                room = max(0, int((limit - self._bytes) / self._row_bytes))
                if room < len(samples):
                    refused = len(samples) - room
                    samples = samples[:room]
                    self._refusing = True
        if samples:
            self._insert(samples, now)
        if refused:
            # refusals by the quota, each offer counted (the pipeline holds and offers again;
            # Health.refused counts the samples it finally turned away)
            self._bump("refused", refused)
            raise SpoolFull(f"spool quota of {limit} bytes reached", accepted=len(samples))
        if self._bytes > limit:  # drop_oldest: the new rows overshot, the oldest go
            self._enforce_quota()

    def _insert(self, samples: Sequence[Sample], now: float) -> None:
        first = self._last_seq + 1
        rows = [
            (
                first + i,
                now,
                s.ts_ns,
                s.machine,
                s.signal,
                None if isinstance(s.value, str) else s.value,
                s.value if isinstance(s.value, str) else None,
                s.unit,
                s.quality,
                json.dumps(s.tags, separators=(",", ":")) if s.tags else None,
            )
            for i, s in enumerate(samples)
        ]
        with self._tx() as db:
            db.executemany("INSERT INTO samples VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            self._bump("appended", len(rows))
        self._last_seq = first + len(rows) - 1
        self._appends_since_check += len(rows)
        self._bytes += int(self._row_bytes * len(rows))
        # Measure now and then: often enough that the quota is never overshot by more than
        # about 5 % of itself, rarely enough that measuring costs nothing.
        every = max(100, min(20_000, int(self._settings.max_bytes / self._row_bytes / 20)))
        if self._appends_since_check >= every:
            self._appends_since_check = 0
            self._measure()

    async def heartbeat(self, now_ns: int) -> int | None:
        """Record that the gateway is alive at ``now_ns``; return the previous record.

        The previous record is when a gateway last wrote to this spool: on start, the time
        between it and now is a gap no adapter could see (the gateway itself was not running).
        """
        return await self._call(self._heartbeat, now_ns)

    def _heartbeat(self, now_ns: int) -> int | None:
        self._ensure_open()
        row = self.db.execute("SELECT alive_ns FROM heartbeat WHERE id = 1").fetchone()
        self.db.execute(
            "INSERT INTO heartbeat(id, alive_ns) VALUES (1, ?) "
            "ON CONFLICT(id) DO UPDATE SET alive_ns = excluded.alive_ns",
            (now_ns,),
        )
        return int(row[0]) if row else None

    async def dead_letter(self, source: str, origin: str, reason: str, payload: bytes) -> None:
        await self._call(self._dead_letter, source, origin, reason, payload)

    def _dead_letter(self, source: str, origin: str, reason: str, payload: bytes) -> None:
        self._ensure_open()
        self.db.execute(
            "INSERT INTO dead_letters(at_s, source, origin, reason, payload) VALUES (?,?,?,?,?)",
            (time.time(), source, origin, reason, payload[:MAX_DEAD_LETTER_PAYLOAD]),
        )

    # ----------------------------------------------------------------- reading
    async def read(self, sink: str, limit: int) -> list[SpooledSample]:
        """The next samples for ``sink``; nothing while the file cannot be opened."""
        if self._db is None:
            try:
                await self._call(self._open)
            except SpoolDiskError:
                return []
        if self._cursors[sink] >= self._last_seq:
            return []
        return await self._call(self._read, sink, limit)

    def _read(self, sink: str, limit: int) -> list[SpooledSample]:
        # A new read means the previous batch is settled (acknowledged or to be retried).
        self._dropped_inflight.pop(sink, None)
        self._inflight.pop(sink, None)
        cur = self.db.execute(
            "SELECT seq, ts_ns, machine, signal, value, text, unit, quality, tags FROM samples "
            "WHERE seq > ? ORDER BY seq LIMIT ?",
            (self._cursors[sink], limit),
        )
        out = []
        for seq, ts_ns, machine, signal, value, text, unit, quality, tags in cur:
            out.append(
                SpooledSample(
                    seq,
                    Sample(
                        machine,
                        signal,
                        text if text is not None else value,
                        unit,
                        ts_ns,
                        quality,
                        json.loads(tags) if tags else {},
                    ),
                )
            )
        if out:
            self._inflight[sink] = (out[0].seq, out[-1].seq)
        return out

    async def ack(
        self,
        sink: str,
        seq: int,
        *,
        delivered: int = 0,
        quarantined: Sequence[tuple[str, str]] = (),
    ) -> None:
        """The sink holds everything up to ``seq``: move its cursor durably.

        ``delivered`` counts the samples the sink took; ``quarantined`` holds (reason, line)
        of those it refused for good, recorded in the same transaction.
        """
        await self._call(self._ack, sink, seq, delivered, quarantined)

    def _ack(
        self,
        sink: str,
        seq: int,
        delivered: int = 0,
        quarantined: Sequence[tuple[str, str]] = (),
    ) -> None:
        # Samples dropped by the quota while this batch was being written reached the sink:
        # they are counted as delivered, so they must not also count as dropped.
        undrop = self._dropped_inflight.pop(sink, [])
        self._inflight.pop(sink, None)
        q = list(quarantined)
        if sink in self._deferred:
            old = self._deferred.pop(sink)
            seq, delivered, q, undrop = (
                max(seq, old[0]),
                delivered + old[1],
                [*old[2], *q],
                [*old[3], *undrop],
            )
        try:
            self._record_ack(sink, seq, delivered, q, undrop)
        except (sqlite3.Error, OSError) as err:
            if disk_error(err, Path(self._settings.path)) is None:
                raise
            # The disk is full: the sink holds these samples, so its cursor moves in memory
            # (nothing is sent twice while we run); the record follows with the next ack.
            self._deferred[sink] = (seq, delivered, q, undrop)
            self._cursors[sink] = max(self._cursors[sink], seq)
            return
        with contextlib.suppress(sqlite3.Error, OSError):
            if seq >= self._last_seq or seq % 10_000 < 5000:
                self._trim()

    def _record_ack(
        self,
        sink: str,
        seq: int,
        delivered: int,
        quarantined: Sequence[tuple[str, str]],
        undrop: Sequence[tuple[str, int]],
    ) -> None:
        with self._tx() as db:
            if quarantined:
                now = time.time()
                db.executemany(
                    "INSERT INTO quarantine(at_s, sink, reason, line) VALUES (?,?,?,?)",
                    [(now, sink, reason, line) for reason, line in quarantined],
                )
            for name, n in undrop:
                self._bump(name, -n)
            self._bump(f"delivered:{sink}", delivered)
            self._bump(f"quarantined:{sink}", len(quarantined))
            self._cursors[sink] = max(seq, self._cursors[sink])
            db.execute("UPDATE cursors SET seq = ? WHERE sink = ?", (self._cursors[sink], sink))

    def _flush_deferred(self) -> None:
        for sink in list(self._deferred):
            seq, delivered, quarantined, undrop = self._deferred[sink]
            self._record_ack(sink, seq, delivered, quarantined, undrop)
            del self._deferred[sink]

    def _trim(self) -> None:
        if not self._cursors:
            return
        low = min(self._cursors.values())
        if self.db.execute("DELETE FROM samples WHERE seq <= ?", (low,)).rowcount:
            self._refusing = False  # delivered rows made room

    # ----------------------------------------------------------------- limits
    def _db_bytes(self) -> int:
        db = self.db
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        free = db.execute("PRAGMA freelist_count").fetchone()[0]
        size = db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def _drop_through(self, seq: int, reason: str) -> None:
        """Delete rows up to ``seq``; count, per sink, the ones it never received."""
        total = 0
        with self._tx() as db:
            for sink, cursor in self._cursors.items():
                if cursor < seq:
                    name = f"dropped:{reason}:{sink}"
                    lost = db.execute(
                        "SELECT count(*) FROM samples WHERE seq > ? AND seq <= ?", (cursor, seq)
                    ).fetchone()[0]
                    self._bump(name, int(lost))
                    total = max(total, int(lost))
                    inflight = self._inflight.get(sink)
                    if inflight is not None and inflight[0] <= seq:
                        hit = db.execute(
                            "SELECT count(*) FROM samples WHERE seq >= ? AND seq <= ?",
                            (max(inflight[0], cursor + 1), min(inflight[1], seq)),
                        ).fetchone()[0]
                        if hit:
                            self._dropped_inflight.setdefault(sink, []).append((name, int(hit)))
                    self._cursors[sink] = seq
                    db.execute("UPDATE cursors SET seq = ? WHERE sink = ?", (seq, sink))
            if db.execute("DELETE FROM samples WHERE seq <= ?", (seq,)).rowcount:
                self._refusing = False  # dropped rows (max age) made room
        why = "over the spool quota (drop_oldest)" if reason == "quota" else "older than max_age_s"
        self._drops.add(f"samples dropped from the spool unsent, {why}", total)

    def _enforce_age(self) -> None:
        limit = time.time() - self._settings.max_age_s
        row = self.db.execute(
            "SELECT max(seq) FROM samples WHERE seq <= "
            "(SELECT coalesce(max(seq), 0) FROM samples WHERE spooled_s < ?)",
            (limit,),
        ).fetchone()
        if row[0] is not None:
            self._drop_through(int(row[0]), "max_age")

    def _measure(self) -> tuple[int, int | None]:
        """Measure the bytes in use and refine the bytes-per-row estimate."""
        self._bytes = self._db_bytes()
        count, first = self.db.execute("SELECT count(*), min(seq) FROM samples").fetchone()
        if count >= 1000:
            self._row_bytes = max(20.0, self._bytes / count)
        if self._bytes + self._row_bytes * 1000 >= self._settings.max_bytes:
            self._enforce_quota()
        return int(count), first

    def _enforce_quota(self, incoming: int = 0) -> None:
        self._bytes = self._db_bytes()
        needed = self._bytes + int(self._row_bytes * incoming)
        if needed < self._settings.max_bytes or self._settings.overflow != "drop_oldest":
            return
        rows = self.db.execute("SELECT count(*), min(seq) FROM samples").fetchone()
        count, first = int(rows[0]), rows[1]
        if not count:
            return
        # Free a tenth of the quota at once so the check does not run on every append.
        excess = needed - int(self._settings.max_bytes * 0.9)
        n = min(count, max(1, int(excess / self._row_bytes)))
        self._drop_through(int(first) + n - 1, "quota")
        self._bytes = self._db_bytes()

    # ----------------------------------------------------------------- retention
    async def maintain(self) -> None:
        """Periodic upkeep: prune dead letters and quarantine, flush rate-limited drop lines.

        Cheap when nothing is due (prunes at most once a minute); a full disk only delays it
        (deleting rows needs a little room in the WAL).
        """
        await self._call(self._maintain)

    def _maintain(self) -> None:
        self._drops.flush()
        now = time.monotonic()
        if self._db is None or now - self._last_prune < 60.0:
            return
        self._last_prune = now
        self.prune_now()

    def prune_now(self) -> dict[str, int]:
        """Apply the dead-letter and quarantine limits (age, then row cap); counts pruned."""
        st = self._settings
        out: dict[str, int] = {}
        with self._tx() as db:
            for table, max_age, max_rows in (
                ("dead_letters", st.dead_letters_max_age_s, st.dead_letters_max_rows),
                ("quarantine", st.quarantine_max_age_s, st.quarantine_max_rows),
            ):
                n = db.execute(
                    f"DELETE FROM {table} WHERE at_s < ?",
                    (time.time() - max_age,),
                ).rowcount
                n += db.execute(
                    f"DELETE FROM {table} WHERE id <= (SELECT max(id) FROM {table}) - ?",
                    (max_rows,),
                ).rowcount
                if n:
                    self._bump(f"pruned:{table}", n)
                    out[table] = n
        for table, n in out.items():
            log.info("spool: pruned %d old %s (retention limits)", n, table.replace("_", " "))
        return out

    async def prune(self) -> dict[str, int]:
        """Prune now (what :meth:`maintain` does once a minute)."""
        return await self._call(self.prune_now)

    # ----------------------------------------------------------------- accounting
    def _bump(self, name: str, n: int) -> None:
        """Add ``n`` to a durable counter (in the caller's transaction when one is open)."""
        if n:
            self._counters[name] = self._counters.get(name, 0) + n
            self.db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, n),
            )

    async def stats(self) -> SpoolStats:
        return await self._call(self._stats)

    def _stats(self) -> SpoolStats:
        db = self._ensure_open()
        now = time.time()
        rows, oldest = db.execute("SELECT count(*), min(spooled_s) FROM samples").fetchone()
        stats = SpoolStats(
            rows=int(rows),
            bytes=self._db_bytes(),
            max_bytes=self._settings.max_bytes,
            oldest_age_s=(now - oldest) if oldest else 0.0,
            refused=self._counters.get("refused", 0),
            appended=self._counters.get("appended", 0),
        )
        for sink, cursor in self._cursors.items():
            stats.depth[sink] = self._last_seq - cursor
            first = db.execute(
                "SELECT spooled_s FROM samples WHERE seq > ? ORDER BY seq LIMIT 1", (cursor,)
            ).fetchone()
            stats.oldest_age_by_sink[sink] = (now - first[0]) if first else 0.0
            stats.delivered[sink] = self._counters.get(f"delivered:{sink}", 0)
            stats.quarantined[sink] = self._counters.get(f"quarantined:{sink}", 0)
            stats.dropped[sink] = 0
        for name, value in self._counters.items():
            kind, _, rest = name.partition(":")
            if kind == "pruned":
                stats.pruned[rest] = value
            if kind == "dropped":
                reason, _, sink = rest.partition(":")
                stats.dropped_by_reason[(sink, reason)] = value
                if sink in stats.dropped:
                    stats.dropped[sink] += value
        return stats

    def depth(self, sink: str) -> int:
        return self._last_seq - self._cursors[sink]
