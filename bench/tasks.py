"""The bench's task module (`serve --tasks bench/tasks.py`): the runs whose feed the subscribers watch. A run
waits on its input stream `stop`, so it stays open while the publisher (bench/publish.py, another process on the
load core) sets its metadata through the SDK on Redis."""

from __future__ import annotations

from bridge import streams, task

TASK_ID = "bench-feed"
OPEN_SECONDS = 3600  # longer than any bench run


@task(id=TASK_ID)
async def feed(payload: dict[str, object]) -> None:
    await streams.input("stop").once(timeout=OPEN_SECONDS)
