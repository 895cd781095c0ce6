"""Run journals in Redis: a list of entries and the current attempt, under the run's hash tag."""

from __future__ import annotations

from typing import cast

from bridge.backends.base import JournalStore
from bridge.backends.redis.connection import Connection, unavailable


class RedisJournalStore(JournalStore):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._redis = conn.redis
        self._keys = conn.keys
        self._begin_script = conn.script("begin_attempt", acknowledged=True)
        self._append_script = conn.script("append_journal", acknowledged=True)

    async def begin_attempt(self, run_id: str, attempt: int) -> bool:
        keys = [self._keys.attempt(run_id), self._keys.journal(run_id)]
        async with unavailable("beginning a run attempt"):
            return bool(await self._begin_script(keys=keys, args=[attempt, self._conn.retention_ms]))

    async def append_journal(self, run_id: str, attempt: int, position: int, entry: bytes) -> bool:
        keys = [self._keys.attempt(run_id), self._keys.journal(run_id)]
        args: list[str | int | bytes] = [attempt, position, entry, self._conn.retention_ms]
        async with unavailable("appending to a run journal"):
            return bool(await self._append_script(keys=keys, args=args))

    async def read_journal(self, run_id: str) -> list[bytes]:
        async with unavailable("reading a run journal"):
            return cast(list[bytes], await self._redis.lrange(self._keys.journal(run_id), 0, -1))

    async def current_attempt(self, run_id: str) -> int:
        async with unavailable("reading a run attempt"):
            stored = await self._redis.get(self._keys.attempt(run_id))
        return int(stored) if stored is not None else 0
