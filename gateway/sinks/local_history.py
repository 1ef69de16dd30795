"""The embedded local history: SQLite, for a box with no InfluxDB (and for the demo).

Same schema as InfluxDB (measurement ``telemetry``, tags, ``value``/``text``) and the same
write semantics: a point with the same series and timestamp overwrites the previous one, so
a replayed batch after a crash leaves no duplicates.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ..config import LocalHistorySettings
from ..lineprotocol import encode
from ..sample import Sample
from .base import SinkContext, SinkFactory, SinkPlugin

if TYPE_CHECKING:
    from ..config import SiteConfig

_SCHEMA = """
CREATE TABLE IF NOT EXISTS telemetry (
    machine TEXT NOT NULL,
    signal TEXT NOT NULL,
    ts_ns INTEGER NOT NULL,
    value REAL,
    text TEXT,
    unit TEXT NOT NULL,
    quality TEXT NOT NULL,
    site TEXT NOT NULL,
    tags TEXT,
    PRIMARY KEY (machine, signal, ts_ns)
) WITHOUT ROWID;
"""


class LocalHistorySink:
    def __init__(self, settings: LocalHistorySettings, context: SinkContext) -> None:
        self.name = "local_history"
        site = context.site
        self.batch_size = 5000
        self._settings = settings
        self._site = site
        self._db: sqlite3.Connection | None = None
        self._last_prune = 0.0

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        path = Path(self._settings.path)
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(_SCHEMA)
        self._db = db

    async def ensure_database(self) -> None:
        """Nothing more to create: :meth:`open` made the file and its table."""

    async def close(self) -> None:
        if self._db is not None:
            await asyncio.to_thread(self._db.close)
            self._db = None

    def describe(self, sample: Sample) -> str:
        return encode(sample, self._site)

    async def write(self, samples: list[Sample]) -> None:
        await asyncio.to_thread(self._write, samples)

    def _write(self, samples: list[Sample]) -> None:
        db = self._db
        assert db is not None, "sink not opened"
        rows = [
            (
                s.machine,
                s.signal,
                s.ts_ns,
                None if isinstance(s.value, str) else s.value,
                s.value if isinstance(s.value, str) else None,
                s.unit,
                s.quality,
                self._site,
                json.dumps(s.tags) if s.tags else None,
            )
            for s in samples
        ]
        db.execute("BEGIN")
        db.executemany("INSERT OR REPLACE INTO telemetry VALUES (?,?,?,?,?,?,?,?,?)", rows)
        db.execute("COMMIT")
        now = time.time()
        if now - self._last_prune > 3600:
            self._last_prune = now
            cutoff = int((now - self._settings.retention_days * 86400) * 1e9)
            db.execute("DELETE FROM telemetry WHERE ts_ns < ?", (cutoff,))


def _select(site: SiteConfig) -> LocalHistorySettings | None:
    return site.local_history if site.history_enabled else None


def _load() -> SinkFactory[LocalHistorySettings]:
    return LocalHistorySink


plugin: SinkPlugin[LocalHistorySettings] = SinkPlugin(select=_select, load=_load)
