"""How often the remote transport tries a call again: only a call that is safe to repeat (docs/limits.md)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

ATTEMPTS = 3  # per call, the first included
FIRST_BACKOFF_SECONDS = 0.25  # doubling: 0.25 s, then 0.5 s


async def retrying(attempt: Callable[[], Awaitable[T]], may_retry: Callable[[Exception], bool]) -> T:
    """`attempt()`, again after a backoff while it raises what `may_retry` accepts, at most ATTEMPTS times;
    then the last exception propagates."""
    number = 1
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if number >= ATTEMPTS or not may_retry(exc):
                raise
        await asyncio.sleep(FIRST_BACKOFF_SECONDS * 2 ** (number - 1))
        number += 1
