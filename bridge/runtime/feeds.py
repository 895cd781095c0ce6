"""Run feeds: one run, runs with all of some tags, or a batch — a snapshot, then every change.

`FeedSpec` says what a feed holds; `FeedCursor` follows one for a single consumer (an Electric
long-poll session or an SDK iterator): it attaches its live listener *before* reading the
snapshot and keeps, per run, only states newer than what its consumer has seen, so nothing
published between the snapshot and the live feed is lost or shown twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from bridge.backends.base import RunStore
from bridge.backends.channels import batch_channel, run_channel, tag_channel
from bridge.config import Settings
from bridge.durations import parse_duration_seconds
from bridge.errors import ForbiddenError, ValidationError
from bridge.models import Run, now_ms
from bridge.runtime.access import Principal
from bridge.runtime.hub import Hub, Message

FeedKind = Literal["run", "tags", "batch"]
DEFAULT_TAG_WINDOW = "1d"  # a tag feed's `createdAt` when none is given


@dataclass(frozen=True)
class FeedSpec:
    kind: FeedKind
    run_id: str = ""
    tags: tuple[str, ...] = ()
    batch_id: str = ""
    since_ms: int = 0  # tag feeds: only runs created at or after this instant
    limit: int = 1000

    @classmethod
    def for_run(cls, run_id: str) -> FeedSpec:
        return cls(kind="run", run_id=run_id)

    @classmethod
    def for_tags(cls, tags: list[str] | tuple[str, ...], since_ms: int, limit: int) -> FeedSpec:
        return cls(kind="tags", tags=tuple(sorted(set(tags))), since_ms=since_ms, limit=limit)

    @classmethod
    def for_batch(cls, batch_id: str) -> FeedSpec:
        return cls(kind="batch", batch_id=batch_id)

    @property
    def channel(self) -> str:
        """A run with all the tags is published on each tag's channel: listening to one suffices."""
        if self.kind == "run":
            return run_channel(self.run_id)
        if self.kind == "tags":
            return tag_channel(self.tags[0])
        return batch_channel(self.batch_id)

    @property
    def topic(self) -> str:
        """The name clients see on updates; equal specs (bar the time window) share it."""
        if self.kind == "run":
            return f"run:{self.run_id}"
        if self.kind == "tags":
            return "tags:" + orjson.dumps(list(self.tags)).decode()
        return f"batch:{self.batch_id}"

    def matches(self, run: Run) -> bool:
        if self.kind == "tags":
            return run.created_at >= self.since_ms and all(tag in run.tags for tag in self.tags)
        return True

    def admits(self, run: Run, seen: Mapping[str, int]) -> bool:
        """Whether a consumer that has `seen` (run id -> newest version) takes this state of `run`: it belongs
        to the feed and is newer, and a tags feed is not full yet (like the official feed, it holds at most
        `limit` runs)."""
        if not self.matches(run) or run.version <= seen.get(run.id, 0):
            return False
        return self.kind != "tags" or run.id in seen or len(seen) < self.limit

    async def snapshot(self, runs: RunStore) -> list[Run]:
        if self.kind == "run":
            run = await runs.get_run(self.run_id)
            return [run] if run else []
        if self.kind == "tags":
            return await runs.runs_with_tags(list(self.tags), self.since_ms, self.limit)
        return await runs.runs_in_batch(self.batch_id)


def authorized_tag_feed(principal: Principal, tags: list[str], created_at: object, settings: Settings) -> FeedSpec:
    """The feed of runs with all of `tags` created within `created_at` (at most the retention), if `principal`
    may read it: `read:runs`, `read:tags`, or `read:tags:<tag>` for one of the tags."""
    if not principal.allows_any("read", [("runs", None), ("tags", None), *(("tags", t) for t in tags)]):
        raise ForbiddenError("Unauthorized: reading these tags needs read:tags or read:tags:<tag>")
    if not isinstance(created_at, (str, int, float)):
        raise ValidationError('createdAt is a duration like "1h" or seconds')
    seconds = min(parse_duration_seconds(created_at), settings.retention_seconds)
    return FeedSpec.for_tags(tags, now_ms() - int(seconds * 1000), settings.limits.max_tag_feed_runs)


class Feeds:
    """Run feeds for the servers, which reach the broker only through the runtime."""

    def __init__(self, hub: Hub, runs: RunStore) -> None:
        self._hub = hub
        self._runs = runs

    def cursor(self, spec: FeedSpec) -> FeedCursor:
        return FeedCursor(self._hub, self._runs, spec)

    async def snapshot(self, spec: FeedSpec) -> list[Run]:
        return await spec.snapshot(self._runs)


class FeedCursor:
    """A single consumer's view of a feed; changes coalesce per run, so memory is bounded by the feed's size."""

    def __init__(self, hub: Hub, runs: RunStore, spec: FeedSpec) -> None:
        self.spec = spec
        self._hub = hub
        self._runs = runs
        self._seen: dict[str, int] = {}  # run id -> newest version handed to the consumer
        self._pending: dict[str, Run] = {}
        self._resync_needed = False
        self._changed = asyncio.Event()
        self._attached = False

    async def open(self) -> list[Run]:
        """Attaches, then returns the snapshot; the snapshot counts as seen."""
        await self._hub.attach(self.spec.channel, self._on_message)
        self._attached = True
        return self._take(await self.spec.snapshot(self._runs))

    async def close(self) -> None:
        if self._attached:
            self._attached = False
            await self._hub.detach(self.spec.channel, self._on_message)

    async def next_changes(self, timeout: float | None) -> list[Run]:
        """Runs that changed since the last call, oldest change first; [] after `timeout` seconds."""
        if not self._pending and not self._resync_needed:
            self._changed.clear()
            try:
                async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow a cancel of the caller
                    await self._changed.wait()
            except TimeoutError:
                return []
        if self._resync_needed:
            snapshot = await self.spec.snapshot(self._runs)
            self._resync_needed = False  # only now: a cancelled read must leave the resync to do
            # Pending changes stay: one that arrived during the read may be newer than the snapshot.
            return self._take(snapshot)
        changed = list(self._pending.values())
        self._pending.clear()
        return self._take(changed)

    def _take(self, runs: list[Run]) -> list[Run]:
        fresh = [run for run in runs if run.version > self._seen.get(run.id, 0)]
        for run in fresh:
            self._seen[run.id] = run.version
        return fresh

    def _on_message(self, channel: str, message: Message | None) -> None:
        if message is None:
            self._resync_needed = True
        else:
            run = message.run
            if not self.spec.admits(run, self._seen):
                return
            self._pending.pop(run.id, None)  # re-insert: the order of pending follows the latest change
            self._pending[run.id] = run
        self._changed.set()
