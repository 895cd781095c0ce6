"""The official run feeds: Electric-shape long-polls that `useRealtimeRun`, `useRealtimeRunsWithTag`
and `useRealtimeBatch` read.

A first request (`offset=-1`) opens a feed session: a `FeedCursor` that stays attached to the
run changes between polls, so nothing published between two polls is missed. Its id is the
Electric `handle`; each answer with changes moves the session's offset on. A poll repeating the
previous offset (the client never got the last answer) gets that answer again, merged with what
changed since. A session idle for a minute is forgotten; a poll for an unknown handle (expired,
or served by another bridge process) gets 409 and the client starts over with a new snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from bridge.aio import cancel_and_wait
from bridge.config import Limits
from bridge.errors import NotFoundError, TooManyError, ValidationError
from bridge.models import Run, new_id
from bridge.runtime.access import require_run_read
from bridge.runtime.core import Bridge
from bridge.runtime.feeds import DEFAULT_TAG_WINDOW, FeedCursor, FeedSpec, authorized_tag_feed
from bridge.server.http import bridge_of, handles_errors, principal_of
from bridge.server.official.electric import EncodedRows, row_key, schema_header, visible_columns

log = logging.getLogger(__name__)

UP_TO_DATE = {"headers": {"control": "up-to-date"}}
MUST_REFETCH = [{"headers": {"control": "must-refetch"}}]
RunCheck = Callable[[Run], None]  # raises unless the caller may read that run


@dataclass
class FeedSession:
    id: str
    cursor: FeedCursor
    columns: tuple[str, ...]
    subject: Run | None = None  # a run feed's run as its snapshot had it: what later polls are authorized on
    offset: int = 0
    last_batch: list[Run] = field(default_factory=list)  # what the answer that moved to `offset` carried
    sent: set[str] = field(default_factory=set)  # run ids the client has as rows
    last_used: float = field(default_factory=time.monotonic)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class FeedSessions:
    """This process's open feed sessions, bounded in number and idle time."""

    def __init__(self, bridge: Bridge, limits: Limits) -> None:
        self._bridge = bridge
        self._limits = limits
        self._gauges = bridge.metrics.electric_subscriptions
        self._sessions: dict[str, FeedSession] = {}
        self.rows = EncodedRows()
        self._opening = 0
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        await cancel_and_wait(self._sweeper)
        for session in list(self._sessions.values()):
            await self._forget(session)

    async def open(
        self, spec: FeedSpec, columns: tuple[str, ...], check_run: RunCheck | None
    ) -> tuple[FeedSession, list[Run]]:
        """A new session and its snapshot; with `check_run` (a run feed), only if the run exists and passes it."""
        # Sessions still reading their snapshot count too, or concurrent opens would overshoot the bound.
        if len(self._sessions) + self._opening >= self._limits.max_feed_sessions:
            raise TooManyError("too many open realtime feeds on this bridge; retry shortly")
        cursor = self._bridge.feeds.cursor(spec)
        self._opening += 1
        try:
            snapshot = await cursor.open()
            if check_run:
                if not snapshot:
                    raise NotFoundError(f"Run not found: {spec.run_id}")
                check_run(snapshot[0])
        except BaseException:
            await _close_quietly(cursor)  # it may have attached before the snapshot read failed
            raise
        finally:
            self._opening -= 1
        subject = snapshot[0] if check_run else None
        session = FeedSession(id=new_id("feed_"), cursor=cursor, columns=columns, subject=subject)
        self._sessions[session.id] = session
        self._gauges[spec.kind].inc()
        return session, snapshot

    def get(self, handle: str) -> FeedSession | None:
        session = self._sessions.get(handle)
        if session:
            session.last_used = time.monotonic()
        return session

    @property
    def count(self) -> int:
        return len(self._sessions)

    async def _sweep_forever(self) -> None:
        idle = self._limits.feed_session_idle_seconds
        while True:
            await asyncio.sleep(min(idle, 5.0))
            cutoff = time.monotonic() - idle
            for session in [s for s in self._sessions.values() if s.last_used < cutoff and not s.lock.locked()]:
                await self._forget(session)

    async def _forget(self, session: FeedSession) -> None:
        del self._sessions[session.id]
        self._gauges[session.cursor.spec.kind].dec()
        await _close_quietly(session.cursor)  # one failing close must not end the sweeping


async def _close_quietly(cursor: FeedCursor) -> None:
    try:
        await cursor.close()
    except Exception:
        log.warning("could not detach a closed feed session's cursor", exc_info=True)


def _rows(runs: list[Run], session: FeedSession, encoded: EncodedRows) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        operation = "update" if run.id in session.sent else "insert"
        session.sent.add(run.id)
        value = encoded.value(run, session.columns)
        rows.append({"key": row_key(run.id), "value": value, "headers": {"operation": operation}})
    return rows


def _answer(body: list[dict[str, Any]], session: FeedSession, *, live: bool) -> Response:
    headers = {
        "cache-control": "no-store",
        "electric-handle": session.id,
        "electric-offset": f"{session.offset}_0",
        "electric-up-to-date": "",  # every answer ends up to date; without it the client prefetches
    }
    if live:
        headers["electric-cursor"] = str(int(time.time()))
    else:
        headers["electric-schema"] = schema_header(session.columns)
    return Response(orjson.dumps(body), headers=headers, media_type="application/json")


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _serve_feed(request: Request, spec: FeedSpec, check_run: RunCheck | None = None) -> Response:
    """`check_run`: a run feed's authorization, made on the run its session read (its snapshot), not on a read
    of its own per poll: who may read a run depends on its id, task, tags and batch, which never change."""
    sessions: FeedSessions = request.app.state.feed_sessions
    params = request.query_params
    live = params.get("live") == "true"
    offset = params.get("offset", "-1")
    handle = params.get("handle")
    if offset == "-1" or not handle:
        opened, snapshot = await sessions.open(spec, visible_columns(params.get("skipColumns")), check_run)
        async with opened.lock:
            opened.offset = 1
            opened.last_batch = snapshot
            return _answer([*_rows(snapshot, opened, sessions.rows), UP_TO_DATE], opened, live=False)

    session = sessions.get(handle)
    if session is None or session.cursor.spec.topic != spec.topic:
        if check_run:  # as for a first poll: 404 or 403 before the 409 that makes the client start over
            check_run(await bridge_of(request).engine.retrieve(spec.run_id))
        return _must_refetch()
    if check_run:
        assert session.subject is not None  # a run feed's session holds its run from the start
        check_run(session.subject)
    async with session.lock:
        replay: list[Run] = []
        if offset == f"{session.offset - 1}_0":
            replay = session.last_batch  # the client missed our last answer
        elif offset != f"{session.offset}_0":
            return _must_refetch()
        bridge = bridge_of(request)
        hold = bridge.settings.limits.live_poll_hold_seconds if live and not replay else 0.0
        # Only a poll that waits for changes is held open.
        with bridge.metrics.long_polls.track_inprogress() if hold else contextlib.nullcontext():
            changes = await _next_changes_unless_gone(request, session, hold)
        if changes is None:
            return Response(status_code=204)  # the client left; nothing was consumed
        batch = list({run.id: run for run in [*replay, *changes]}.values())
        if batch:
            if not replay:
                session.offset += 1
            session.last_batch = batch
        return _answer([*_rows(batch, session, sessions.rows), UP_TO_DATE], session, live=live)


def _must_refetch() -> Response:
    """409 with a JSON array body (anything else freezes the official client) and a fresh handle."""
    headers = {"cache-control": "no-store", "electric-handle": new_id("feed_")}
    return Response(orjson.dumps(MUST_REFETCH), status_code=409, headers=headers, media_type="application/json")


async def _next_changes_unless_gone(request: Request, session: FeedSession, hold: float) -> list[Run] | None:
    changes = asyncio.create_task(session.cursor.next_changes(timeout=hold))
    gone = asyncio.create_task(_wait_for_disconnect(request))
    done, _ = await asyncio.wait({changes, gone}, return_when=asyncio.FIRST_COMPLETED)
    for task in (changes, gone):
        if task not in done:
            await cancel_and_wait(task)
    return changes.result() if changes in done else None


@handles_errors
async def run_feed(request: Request) -> Response:
    principal = principal_of(request)
    spec = FeedSpec.for_run(request.path_params["run_id"])
    return await _serve_feed(request, spec, lambda run: require_run_read(principal, run))


@handles_errors
async def tag_feed(request: Request) -> Response:
    principal = principal_of(request)
    bridge = bridge_of(request)
    tags = [t for t in request.query_params.get("tags", "").split(",") if t]
    tags = bridge.engine.check_tags(tags)
    if not tags:
        raise ValidationError("tags is required: ?tags=a,b")
    window = request.query_params.get("createdAt") or DEFAULT_TAG_WINDOW
    return await _serve_feed(request, authorized_tag_feed(principal, tags, window, bridge.settings))


@handles_errors
async def batch_feed(request: Request) -> Response:
    principal = principal_of(request)
    batch_id = request.path_params["batch_id"]
    principal.require_any("read", [("batch", batch_id), ("runs", None)])
    return await _serve_feed(request, FeedSpec.for_batch(batch_id))
