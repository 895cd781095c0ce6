"""Runs in Redis: one hash per run (stored and published by one script), tag and batch indexes."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from redis.exceptions import RedisError

from bridge.backends.base import RunStore
from bridge.backends.channels import channels_of
from bridge.backends.redis.connection import Connection, chunks, text, unavailable
from bridge.backends.redis.idempotency import IdempotencyScopes
from bridge.errors import ConflictError
from bridge.models import Run, now_ms

log = logging.getLogger(__name__)

TAG_SCAN_PAGE = 256  # tag index members read per round trip
TAG_SCAN_MAX_MEMBERS = 100_000  # a tag query stops after scanning this many members of its smallest index
BATCH_INDEX_MAX_RUNS = 10_000  # a batch index keeps its first this many runs (batches hold at most 500)
FETCH_CHUNK = 500  # runs read per pipeline


class RedisRunStore(RunStore):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._redis = conn.redis
        self._keys = conn.keys
        self._scopes = IdempotencyScopes(conn)
        self._store_script = conn.script("store_run", acknowledged=True)

    async def insert_run(self, run: Run, idempotency_scope: str | None, idempotency_ttl: float) -> tuple[Run, bool]:
        async with unavailable("storing a run"):
            if idempotency_scope:
                existing = await self._scopes.take(idempotency_scope, run.id, idempotency_ttl, self.get_run)
                if existing is not None:
                    return existing, False
            # Index first: a listener that attached and then reads an index never misses the run.
            if run.tags or run.batch_id:
                retention_ms = self._conn.retention_ms
                cutoff = now_ms() - retention_ms
                async with self._redis.pipeline(transaction=False) as pipe:
                    for tag in run.tags:
                        key = self._keys.tag(tag)
                        pipe.zadd(key, {run.id: run.created_at})
                        pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
                        pipe.pexpire(key, retention_ms)
                    if run.batch_id:
                        key = self._keys.batch(run.batch_id)
                        pipe.rpush(key, run.id)
                        pipe.ltrim(key, 0, BATCH_INDEX_MAX_RUNS - 1)
                        pipe.pexpire(key, retention_ms)
                    await pipe.execute()
            if not await self._store(run, expected_version=0):
                raise ConflictError(f"run {run.id} already exists")
            return run, True

    async def _store(self, run: Run, expected_version: int) -> bool:
        data = run.to_storage()
        channels = [self._keys.wire(c) for c in channels_of(run)]
        # In a cluster the script publishes only in its own slot: the run's channel (the first).
        in_script, after = (channels[:1], channels[1:]) if self._conn.cluster else (channels, [])
        args: list[str | int | bytes] = [
            expected_version,
            run.version,
            data,
            self._conn.retention_ms,
            "1" if run.status.is_final else "0",
            self._conn.publish_command,
            *in_script,
        ]
        if not await self._store_script(keys=[self._keys.run(run.id)], args=args):
            return False
        if after:
            # Stored, so a failed publish is not a failed write: that shard is down (or this process's
            # way to it), and its subscribers resync once they are back.
            try:
                async with self._redis.pipeline(transaction=False) as pipe:  # one round trip per master
                    for channel in after:
                        pipe.execute_command(self._conn.publish_command, channel, data)
                    results = await pipe.execute(raise_on_error=False)
            except (RedisError, OSError) as exc:
                results = [exc]
            for failed in (r for r in results if isinstance(r, Exception)):
                log.warning("run %s stored, but not published on all its tag and batch channels: %s", run.id, failed)
        return True

    async def get_run(self, run_id: str) -> Run | None:
        async with unavailable("reading a run"):
            raw = await self._redis.hget(self._keys.run(run_id), "data")
        return Run.from_storage(raw) if raw is not None else None

    async def replace_run(self, run: Run, expected_version: int) -> bool:
        async with unavailable("storing a run"):
            return await self._store(run, expected_version)

    async def _fetch_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """The runs still stored, in the given order (expired ones are dropped)."""
        runs: list[Run] = []
        for chunk in chunks(run_ids, FETCH_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id in chunk:
                    pipe.hget(self._keys.run(run_id), "data")
                raws: list[bytes | None] = await pipe.execute()
            runs.extend(Run.from_storage(raw) for raw in raws if raw is not None)
        return runs

    async def runs_with_tags(self, tags: list[str], since_ms: int, limit: int) -> list[Run]:
        keys = [self._keys.tag(tag) for tag in dict.fromkeys(tags)]
        if not keys or limit <= 0:
            return []
        async with unavailable("reading a tag index"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zcount(key, since_ms, "+inf")
                counts: list[int] = await pipe.execute()
            if min(counts) == 0:
                return []
            # Scan the smallest index newest first; keep members that every other index has.
            smallest, *others = [key for _, key in sorted(zip(counts, keys, strict=True))]
            found: list[Run] = []
            seen: set[str] = set()
            offset = 0
            while len(found) < limit and offset < TAG_SCAN_MAX_MEMBERS:
                page = await self._redis.zrevrangebyscore(smallest, "+inf", since_ms, start=offset, num=TAG_SCAN_PAGE)
                offset += len(page)
                ids = [rid for rid in map(text, page) if rid not in seen]
                seen.update(ids)
                if others and ids:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key in others:
                            pipe.zmscore(key, ids)
                        scores: list[list[float | None]] = await pipe.execute()
                    ids = [rid for i, rid in enumerate(ids) if all(s[i] is not None for s in scores)]
                for run in await self._fetch_runs(ids):
                    if run.created_at >= since_ms and len(found) < limit:
                        found.append(run)
                if len(page) < TAG_SCAN_PAGE:
                    break
            return found

    async def runs_in_batch(self, batch_id: str) -> list[Run]:
        async with unavailable("reading a batch index"):
            ids = await self._redis.lrange(self._keys.batch(batch_id), 0, BATCH_INDEX_MAX_RUNS - 1)
            return await self._fetch_runs([text(i) for i in ids])
