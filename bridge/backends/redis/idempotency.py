"""Idempotency scopes, shared by runs and wait tokens: a scope taken by an owner that is not stored
(yet) is waited for, then taken over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from bridge.backends.redis.connection import Connection, text
from bridge.errors import ConflictError

T = TypeVar("T")

IDEMPOTENCY_SETTLE_SECONDS = 1.0  # how long a concurrent insert of the same scope may take to store its run
IDEMPOTENCY_POLL_SECONDS = 0.02
IDEMPOTENCY_ATTEMPTS = 3


class IdempotencyScopes:
    def __init__(self, conn: Connection) -> None:
        self._keys = conn.keys
        self._claim_script = conn.script("claim_idempotency", acknowledged=True)

    async def take(self, scope: str, owner_id: str, ttl: float, load: Callable[[str], Awaitable[T | None]]) -> T | None:
        """None once the scope is `owner_id`'s; else what `load` finds of the run or token owning it."""
        key = self._keys.idempotency(scope)
        ttl_ms = max(1, int(ttl * 1000))
        stale = ""
        for _ in range(IDEMPOTENCY_ATTEMPTS):
            owner = await self._claim_script(keys=[key], args=[owner_id, ttl_ms, stale])
            if owner is None:
                return None
            current_owner = text(owner)
            deadline = time.monotonic() + IDEMPOTENCY_SETTLE_SECONDS
            while True:  # a concurrent insert stores its run or token right after taking the scope
                existing = await load(current_owner)
                if existing is not None:
                    return existing
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(IDEMPOTENCY_POLL_SECONDS)
            stale = current_owner  # its insert failed (or it expired): take the scope over
        raise ConflictError(f"idempotency key {scope!r} is contended; try again")
