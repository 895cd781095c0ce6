"""`maxDuration`: the most compute time a run may use, as the official option (seconds, on the task and per
trigger; the trigger's wins). Past it, the worker executing the run stops the task's coroutine and the run
ends TIMED_OUT with the error `MAX_DURATION_EXCEEDED`, not retried (docs/queues.md, "Max duration").

Compute time is the time an execution of the run is in a worker, summed over its executions: a parked run
(no process) uses none; a wait still held in the worker (`BRIDGE_WAIT_HOLD`) does.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Coroutine
from typing import Any, TypeVar

from bridge.errors import InvalidOptionError

MIN_MAX_DURATION_SECONDS = 5  # the official minimum
MAX_MAX_DURATION_SECONDS = 30 * 24 * 3600
ERROR_NAME = "MAX_DURATION_EXCEEDED"  # the official error code, as the official run shape names it

T = TypeVar("T")


class MaxDurationExceededError(Exception):
    def __init__(self, seconds: float) -> None:
        super().__init__(f"Run exceeded maximum compute time (maxDuration) of {seconds:g} seconds")


def check_max_duration(value: object, field: str) -> float | None:
    """Seconds, from MIN_ to MAX_MAX_DURATION_SECONDS; None without one."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not MIN_MAX_DURATION_SECONDS <= value <= MAX_MAX_DURATION_SECONDS
    ):
        raise InvalidOptionError(
            f"{field} is a number of seconds from {MIN_MAX_DURATION_SECONDS} to {MAX_MAX_DURATION_SECONDS}", field
        )
    return float(value)


async def within(limit: float | None, remaining: float, work: Coroutine[Any, Any, T]) -> T:
    """Awaits `work`, cancelling it after `remaining` seconds (none if `limit` is None): then raises
    MaxDurationExceededError, also when the task caught the cancellation and returned. With no time left,
    `work` does not start (a replay that never yields would outrun a timeout of 0)."""
    if limit is not None and remaining <= 0:
        work.close()
        raise MaxDurationExceededError(limit)
    deadline = asyncio.timeout(None if limit is None else remaining)
    try:
        async with deadline:
            result = await work
    except TimeoutError:
        if limit is not None and deadline.expired():
            raise MaxDurationExceededError(limit) from None
        raise
    if limit is not None and deadline.expired():
        raise MaxDurationExceededError(limit)
    return result
