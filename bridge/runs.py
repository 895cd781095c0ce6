"""`runs`: retrieve, cancel, reschedule, and follow runs live."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from bridge.client import state as client
from bridge.durations import Moment, parse_duration_seconds
from bridge.models import Run, now_ms
from bridge.runtime.feeds import DEFAULT_TAG_WINDOW, FeedSpec


async def retrieve(run_id: str) -> Run:
    """The run now, a big payload or output (stored as a packet) read too. From a remote bridge
    (`configure(url=...)`): as the official retrieve route gives it, so without `version`, `number` and
    `realtime_streams` (0, 0, empty); the subscriptions carry them (and a packet's path, not its value)."""
    return await (await client.current()).retrieve(run_id)


async def cancel(run_id: str) -> Run:
    return await (await client.current()).cancel(run_id)


async def reschedule(run_id: str, *, delay: Moment) -> Run:
    """Moves a DELAYED run's start to `delay` ("1h", seconds, a timedelta, a datetime); `ValidationError` for a
    run that is not DELAYED."""
    return await (await client.current()).reschedule(run_id, delay)


async def _follow(spec: FeedSpec, stop_when_finished: bool) -> AsyncIterator[Run]:
    async with contextlib.aclosing((await client.current()).follow(spec, stop_when_finished)) as runs:
        async for run in runs:
            yield run


def subscribe_to_run(run_id: str, *, stop_on_completion: bool = True) -> AsyncIterator[Run]:
    """The run now, then each change; ends once it finished (unless `stop_on_completion=False`)."""
    return _follow(FeedSpec.for_run(run_id), stop_on_completion)


def subscribe_to_runs_with_tag(
    tags: str | list[str], *, created_at: str = DEFAULT_TAG_WINDOW, limit: int = 1000
) -> AsyncIterator[Run]:
    """Runs with every tag, created within `created_at` (up to the retention), then each change."""
    since = now_ms() - int(parse_duration_seconds(created_at) * 1000)
    return _follow(FeedSpec.for_tags([tags] if isinstance(tags, str) else tags, since, limit), False)


def subscribe_to_batch(batch_id: str) -> AsyncIterator[Run]:
    return _follow(FeedSpec.for_batch(batch_id), False)
