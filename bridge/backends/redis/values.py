"""One-time keys and values in Redis: plain strings with a TTL."""

from __future__ import annotations

from typing import cast

from bridge.backends.base import KeyValueStore
from bridge.backends.redis.connection import Connection, unavailable


class RedisKeyValueStore(KeyValueStore):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._redis = conn.redis
        self._keys = conn.keys

    async def claim_once(self, key: str, ttl: float) -> bool:
        async with unavailable("claiming a one-time key"):
            name = self._keys.once(key)
            return bool(await self._conn.write(name, "SET", name, b"1", "NX", "PX", max(1, int(ttl * 1000))))

    async def put_value(self, key: str, value: bytes, ttl: float) -> None:
        async with unavailable("storing a value"):
            name = self._keys.value(key)
            await self._conn.write(name, "SET", name, value, "PX", max(1, int(ttl * 1000)))

    async def get_value(self, key: str, keep_for: float | None = None) -> bytes | None:
        async with unavailable("reading a value"):
            if keep_for is None:
                return cast(bytes | None, await self._redis.get(self._keys.value(key)))
            return cast(bytes | None, await self._redis.getex(self._keys.value(key), px=max(1, int(keep_for * 1000))))
