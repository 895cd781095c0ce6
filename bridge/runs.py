"""`runs`: retrieve, cancel, and follow runs live."""

from __future__ import annotations

from collections.abc import AsyncIterator

from bridge.durations import parse_duration_seconds
from bridge.models import Run, now_ms
from bridge.runtime import state
from bridge.runtime.feeds import DEFAULT_TAG_WINDOW, FeedSpec


async def retrieve(run_id: str) -> Run:
    return await (await state.current()).engine.retrieve(run_id)


async def cancel(run_id: str) -> Run:
    return await (await state.current()).engine.cancel(run_id)


async def _follow(spec: FeedSpec, stop_when_finished: bool) -> AsyncIterator[Run]:
    bridge = await state.current()
    cursor = bridge.feeds.cursor(spec)
    try:
        for run in await cursor.open():
            yield run
            if stop_when_finished and run.status.is_final:
                return
        while True:
            for run in await cursor.next_changes(timeout=None):
                yield run
                if stop_when_finished and run.status.is_final:
                    return
    finally:
        await cursor.close()


def subscribe_to_run(run_id: str, *, stop_on_completion: bool = True) -> AsyncIterator[Run]:
    """The run now, then each change; ends once it finished (unless `stop_on_completion=False`)."""
    return _follow(FeedSpec.for_run(run_id), stop_on_completion)


def subscribe_to_runs_with_tag(
    tags: str | list[str], *, created_at: str = DEFAULT_TAG_WINDOW, limit: int = 1000
) -> AsyncIterator[Run]:
    """Runs with every tag, created within `created_at` (up to the retention), then each change."""
    seconds = min(parse_duration_seconds(created_at), state.configured().settings.retention_seconds)
    since = now_ms() - int(seconds * 1000)
    return _follow(FeedSpec.for_tags([tags] if isinstance(tags, str) else tags, since, limit), False)


def subscribe_to_batch(batch_id: str) -> AsyncIterator[Run]:
    return _follow(FeedSpec.for_batch(batch_id), False)
