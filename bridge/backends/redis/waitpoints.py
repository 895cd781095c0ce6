"""Wait tokens in Redis: one hash per token, a set of the runs parked on it, and one sorted set of
deadlines every timer reads."""

from __future__ import annotations

from typing import cast

from bridge.backends.base import WaitpointStore
from bridge.backends.channels import waitpoint_channel
from bridge.backends.redis.connection import Connection, text, unavailable
from bridge.backends.redis.idempotency import IdempotencyScopes


class RedisWaitpointStore(WaitpointStore):
    def __init__(self, conn: Connection) -> None:
        self._redis = conn.redis
        self._keys = conn.keys
        self._scopes = IdempotencyScopes(conn)
        self._complete_script = conn.script("complete_waitpoint")
        self._add_waiter_script = conn.script("add_waitpoint_waiter")

    async def insert_waitpoint(
        self,
        token_id: str,
        spec: bytes,
        timeout_at_ms: int,
        ttl: float,
        idempotency_scope: str | None,
        idempotency_ttl: float,
    ) -> tuple[str, bool]:
        async with unavailable("storing a wait token"):
            if idempotency_scope:
                existing = await self._scopes.take(
                    idempotency_scope, token_id, idempotency_ttl, self._stored_waitpoint_id
                )
                if existing is not None:
                    return existing, False
            # The deadline first: a token is never stored without it (an entry whose token was not
            # stored is dropped by the first timer that finds it due).
            await self._redis.zadd(self._keys.deadlines(), {token_id: timeout_at_ms})
            key = self._keys.waitpoint(token_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "spec", spec)
                pipe.pexpire(key, max(1, int(ttl * 1000)))
                await pipe.execute()
            return token_id, True

    async def _stored_waitpoint_id(self, token_id: str) -> str | None:
        return token_id if await self._redis.exists(self._keys.waitpoint(token_id)) else None

    async def get_waitpoint(self, token_id: str) -> tuple[bytes, bytes | None] | None:
        async with unavailable("reading a wait token"):
            spec, result = await self._redis.hmget(self._keys.waitpoint(token_id), ["spec", "result"])
        return (cast(bytes, spec), cast(bytes | None, result)) if spec is not None else None

    async def complete_waitpoint(self, token_id: str, result: bytes, ttl: float) -> bytes | None:
        args: list[str | int | bytes] = [result, max(1, int(ttl * 1000)), self._keys.wire(waitpoint_channel(token_id))]
        async with unavailable("completing a wait token"):
            stored = await self._complete_script(keys=[self._keys.waitpoint(token_id)], args=args)
        return cast(bytes | None, stored)

    async def due_waitpoints(self, now_ms: int, limit: int) -> list[str]:
        async with unavailable("reading wait token deadlines"):
            ids = await self._redis.zrangebyscore(self._keys.deadlines(), "-inf", now_ms, start=0, num=limit)
        return [text(i) for i in ids]

    async def next_waitpoint_deadline(self) -> int | None:
        async with unavailable("reading wait token deadlines"):
            first = await self._redis.zrange(self._keys.deadlines(), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def forget_waitpoint_deadline(self, token_id: str) -> None:
        async with unavailable("removing a wait token deadline"):
            await self._redis.zrem(self._keys.deadlines(), token_id)

    async def add_waitpoint_waiter(self, token_id: str, run_id: str) -> None:
        keys = [self._keys.waitpoint(token_id), self._keys.waitpoint_waiters(token_id)]
        async with unavailable("adding a wait token's waiter"):
            await self._add_waiter_script(keys=keys, args=[run_id])

    async def waitpoint_waiters(self, token_id: str) -> list[str]:
        async with unavailable("reading a wait token's waiters"):
            members = await self._redis.smembers(self._keys.waitpoint_waiters(token_id))
        return [text(m) for m in members]

    async def waiting_waitpoint_count(self) -> int:
        async with unavailable("counting waiting wait tokens"):
            return int(await self._redis.zcard(self._keys.deadlines()))
