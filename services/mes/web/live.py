"""Live machine tiles as server-sent events.

Machine events reach the MES from the gateway over MQTT (the bridge's thread writes them to the
database) or over HTTP; either way the database is the one truth. One hub per app polls it
(a handful of small queries) every ``interval_s`` while at least one screen is watching, and
pushes a snapshot to every subscriber only when something changed. So a new state or part is
on every tablet within ``interval_s`` of being stored, however many tablets there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from microfactory.mes.api.deps import CurrentUser, SessionDep
from microfactory.mes.web.tiles import machine_tiles

log = logging.getLogger(__name__)

HEARTBEAT_S = 15.0
STREAM_MAX_S = 300.0  # a stream ends now and then; the browser reconnects (bounded shutdown)


class LiveHub:
    """Fans one database poll out to every open live stream; no module-level state."""

    def __init__(self, sessions: sessionmaker[Session], *, interval_s: float = 0.5) -> None:
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self._sessions = sessions
        self.interval_s = interval_s
        self._subscribers: set[asyncio.Queue[str]] = set()
        self._task: asyncio.Task[None] | None = None
        self._latest: str | None = None
        self.polls = 0
        self.errors = 0

    def _snapshot(self) -> str:
        with self._sessions() as session:
            tiles = machine_tiles(session)
        return json.dumps({"machines": tiles}, separators=(",", ":"), sort_keys=True)

    async def snapshot(self) -> str:
        return await run_in_threadpool(self._snapshot)

    async def _run(self) -> None:
        while self._subscribers:
            try:
                data = await self.snapshot()
            except SQLAlchemyError:
                self.errors += 1
                log.exception("live tiles: database poll failed")
            else:
                self.polls += 1
                if data != self._latest:
                    self._latest = data
                    for queue in list(self._subscribers):
                        _offer(queue, data)
            await asyncio.sleep(self.interval_s)
        self._task = None

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[asyncio.Queue[str]]:
        """A queue that always holds the newest snapshot not yet taken (older ones dropped)."""
        queue: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        if self._latest is not None:
            _offer(queue, self._latest)
        self._subscribers.add(queue)
        if self._task is None:
            self._latest = None  # the first poll of a new round is always sent
            self._task = asyncio.create_task(self._run(), name="mes-live-tiles")
        try:
            yield queue
        finally:
            self._subscribers.discard(queue)


def _offer(queue: asyncio.Queue[str], data: str) -> None:
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(data)


def get_hub(request: Request) -> LiveHub:
    hub: LiveHub = request.app.state.live_hub
    return hub


router = APIRouter(prefix="/live", tags=["live"])


@router.get("/machines")
def machines_now(_: CurrentUser, session: SessionDep) -> dict[str, Any]:
    """The shop-floor tiles once: state, current run, good/scrap vs target, energy, power.

    The same tiles, pushed on every change, are at ``GET /api/v1/live/machines/stream``
    (server-sent events, ``event: machines``; kept out of this schema so that API fuzzers do
    not sit on an endless stream).
    """
    return {"machines": machine_tiles(session)}


@router.get("/machines/stream", response_class=StreamingResponse, include_in_schema=False)
async def machines_stream(
    request: Request,
    _: CurrentUser,
    max_s: Annotated[float, Query(gt=0, le=3600, description="close after this long")] = (
        STREAM_MAX_S
    ),
) -> StreamingResponse:
    """Server-sent events: a ``machines`` event with every tile whenever anything changes."""
    hub = get_hub(request)

    async def events() -> AsyncIterator[str]:
        deadline = time.monotonic() + max_s
        yield f"retry: 1000\n: {hub.interval_s:g} s poll\n\n"
        last_sent = time.monotonic()
        async with hub.subscribe() as queue:
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    return
                try:
                    data = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    if time.monotonic() - last_sent > HEARTBEAT_S:
                        last_sent = time.monotonic()
                        yield ": keep-alive\n\n"
                    continue
                last_sent = time.monotonic()
                yield f"event: machines\ndata: {data}\n\n"

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
