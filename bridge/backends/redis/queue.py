"""The task queue on Redis Streams: one stream per task, read through the consumer group "workers".

Semantics (at-least-once): XADD enqueues; XREADGROUP hands an entry to one consumer (the worker
id) and keeps it pending until `ack` (XACK + XDEL, so streams hold only unfinished work);
`heartbeat` resets the idle time of the worker's own pending entries; `reclaim_abandoned`
XAUTOCLAIMs entries idle for a lease. A claim never takes more than one run: a script first reads
the worker's streams one at a time, COUNT 1, starting from a different stream each call (fair
across tasks); only when all are empty does it block in one XREADGROUP over all of them (COUNT
applies per stream there, so a run beyond the first, rare, is put straight back in its queue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping

import orjson
from redis.exceptions import RedisError, ResponseError

from bridge.backends.base import Delivery, Gate, QueueSpec, TaskQueue, default_queue_name
from bridge.backends.redis.connection import OPERATION_TIMEOUT_SECONDS, Connection, chunks, text, unavailable
from bridge.backends.redis.keys import gate_name, parse_gate_name
from bridge.errors import BackendUnavailableError

log = logging.getLogger(__name__)

CONSUMER_GROUP = "workers"
CLAIM_READ_GRACE_SECONDS = 2.0  # a claim's reply may arrive this long after its BLOCK ran out
RECLAIM_COUNT = 10  # entries XAUTOCLAIMed per task stream per `reclaim_abandoned` call
HEARTBEAT_CHUNK = 100  # deliveries per heartbeat script call
CONSUMER_PRUNE_INTERVAL_SECONDS = 60.0  # how often `reclaim_abandoned` removes the consumers of dead workers...
CONSUMER_PRUNE_IDLE_LEASES = 10  # ...idle this many leases with nothing pending (a live worker reads every second)


class RedisTaskQueue(TaskQueue):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._redis = conn.redis
        self._keys = conn.keys
        self._claim_script = conn.script("claim")
        self._requeue_script = conn.script("requeue")
        self._heartbeat_script = conn.script("heartbeat")
        self._gate_script = conn.script("gate", acknowledged=True)
        self._registered: set[str] = set()  # task ids registered through this broker
        self._task_queues: dict[str, QueueSpec | None] = {}  # and their declared queues
        self._groups: set[str] = set()  # streams known to have the consumer group
        # Per worker id claiming through this broker (one per Worker in the process): the streams
        # it claims from (what it reclaims from) and the stream its next claim tries first.
        self._worker_streams: dict[str, set[str]] = {}
        self._turns: dict[str, int] = {}
        self._next_prune = 0.0
        self._crowded_cursor = 0  # where `crowded_gates` goes on

    async def after_reconnect(self) -> None:
        """Redis may have lost its data: consumer groups are recreated when needed, tasks registered again."""
        self._groups.clear()
        if self._registered:
            try:
                await self.register_tasks(sorted(self._registered))
                await self.set_task_queues(self._task_queues)
            except BackendUnavailableError as exc:
                log.warning("could not re-register tasks after reconnecting: %s", exc.message)

    async def enqueue(self, task_id: str, run_id: str) -> None:
        async with unavailable("enqueueing a run"):
            queue = self._keys.task_queue(task_id)
            await self._conn.write(queue, "XADD", queue, "*", "run", run_id)

    async def admit(self, gate: Gate, task_id: str, run_id: str, score: int) -> bool:
        async with unavailable("admitting a run to its queue"):
            return run_id in await self._gate("admit", gate, task_id, run_id, str(gate.limit), str(score))

    async def release(self, gate: Gate, task_id: str, run_id: str) -> list[str]:
        async with unavailable("releasing a run's concurrency slot"):
            return await self._gate("release", gate, task_id, run_id)

    async def _gate(self, mode: str, gate: Gate, task_id: str, run_id: str, *extra: str) -> list[str]:
        args = [mode, run_id, task_id, self._keys.task_queue_prefix(), gate_name(gate.queue, gate.key), *extra]
        queued = await self._gate_script(keys=self._keys.gate(gate.queue, gate.key), args=args)
        return [text(run) for run in queued]

    async def crowded_gates(self, count: int) -> list[tuple[Gate, list[str]]]:
        """SSCAN of the crowded gates' set from where the last call stopped (COUNT is a hint: a few more may
        come), then each one's holders and limit in one pipeline."""
        async with unavailable("reading crowded queue gates"):
            start = self._crowded_cursor
            self._crowded_cursor, names = await self._redis.sscan(self._keys.crowded_gates(), start, count=count)
            if not names and start:  # the end of the set: start over rather than sweep nothing
                self._crowded_cursor, names = await self._redis.sscan(self._keys.crowded_gates(), 0, count=count)
            gates = [parse_gate_name(text(name)) for name in names]
            if not gates:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for queue, key in gates:
                    running, _, limit, _, _ = self._keys.gate(queue, key)
                    pipe.smembers(running)
                    pipe.get(limit)
                replies = await pipe.execute()
        return [
            (Gate(queue, key, int(limit or 0)), sorted(text(run) for run in holders))
            for (queue, key), holders, limit in zip(gates, replies[::2], replies[1::2], strict=True)
        ]

    async def gate_state(self, gate: Gate) -> tuple[list[str], list[str]]:
        running, waiting, _, _, _ = self._keys.gate(gate.queue, gate.key)
        async with unavailable("reading a queue's gate"):
            holding = sorted(text(run) for run in await self._redis.smembers(running))
            members = await self._redis.zrange(waiting, 0, -1)
        return holding, [text(member).partition("|")[0] for member in members]

    async def _ensure_groups(self, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream in self._groups:
                continue
            try:
                await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(stream)

    async def claim(self, worker_id: str, task_ids: list[str], timeout: float) -> Delivery | None:
        streams = [self._keys.task_queue(task_id) for task_id in dict.fromkeys(task_ids)]
        if not streams:
            await asyncio.sleep(timeout)
            return None
        self._worker_streams.setdefault(worker_id, set()).update(streams)
        async with unavailable("claiming a run", OPERATION_TIMEOUT_SECONDS + timeout + CLAIM_READ_GRACE_SECONDS):
            await self._ensure_groups(streams)
            try:
                return await self._claim(worker_id, streams, timeout)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._groups.difference_update(streams)  # Redis lost its data: recreate, claim again
                await self._ensure_groups(streams)
                return await self._claim(worker_id, streams, timeout)

    async def _claim(self, worker_id: str, streams: list[str], timeout: float) -> Delivery | None:
        turn = self._turns.get(worker_id, 0) % len(streams)
        self._turns[worker_id] = turn + 1
        ordered = streams[turn:] + streams[:turn]
        found = await self._claim_script(keys=ordered, args=[CONSUMER_GROUP, worker_id])
        if found:
            index, entry_id, run_id = found
            return Delivery(run_id=text(run_id), receipt=f"{text(entry_id)}|{ordered[int(index) - 1]}")

        block_ms = max(1, int(timeout * 1000))  # BLOCK 0 would wait forever
        async with asyncio.timeout(timeout + CLAIM_READ_GRACE_SECONDS):
            response = await self._conn.blocking.xreadgroup(
                CONSUMER_GROUP, worker_id, dict.fromkeys(ordered, ">"), count=1, block=block_ms
            )
        if not isinstance(response, list):  # RESP2 (RESP_VERSION): [[stream, [(id, fields), ...]], ...]
            raise ResponseError(f"unexpected XREADGROUP reply: {type(response).__name__}")
        deliveries = [
            Delivery(run_id=text(fields.get(b"run", b"")), receipt=f"{text(entry_id)}|{text(stream)}")
            for stream, entries in response or []
            for entry_id, fields in entries
            if fields
        ]
        for extra in deliveries[1:]:
            entry, stream = self._parse_receipt(extra.receipt)
            try:
                await self._requeue_script(keys=[stream], args=[CONSUMER_GROUP, entry, extra.run_id])
            except (RedisError, OSError) as exc:  # still pending: reclaimed after a lease
                log.warning("could not put run %s back in its queue: %s", extra.run_id, exc)
        return deliveries[0] if deliveries else None

    @staticmethod
    def _parse_receipt(receipt: str) -> tuple[str, str]:
        entry_id, _, stream = receipt.partition("|")
        return entry_id, stream

    async def ack(self, delivery: Delivery) -> None:
        entry_id, stream = self._parse_receipt(delivery.receipt)
        async with unavailable("acknowledging a run"), self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, CONSUMER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def heartbeat(self, worker_id: str, deliveries: Iterable[Delivery]) -> None:
        items = list(deliveries)
        async with unavailable("heartbeating"):
            for chunk in chunks(items, HEARTBEAT_CHUNK):
                receipts = [self._parse_receipt(d.receipt) for d in chunk]
                await self._heartbeat_script(
                    keys=[stream for _, stream in receipts],
                    args=[CONSUMER_GROUP, worker_id, *(entry_id for entry_id, _ in receipts)],
                )

    async def reclaim_abandoned(self, worker_id: str) -> list[Delivery]:
        """Entries of the streams this worker claims from, idle for a lease (their worker stopped heartbeating)."""
        streams = sorted(self._worker_streams.get(worker_id, ()))
        min_idle_ms = max(1, int(self._conn.settings.lease_seconds * 1000))
        reclaimed: list[Delivery] = []
        async with unavailable("reclaiming abandoned runs"):
            for stream in streams:
                try:
                    response = await self._redis.xautoclaim(
                        stream,
                        CONSUMER_GROUP,
                        worker_id,
                        min_idle_time=min_idle_ms,
                        start_id="0-0",
                        count=RECLAIM_COUNT,
                    )
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        continue
                    raise
                for entry_id, fields in response[1]:
                    if fields and b"run" in fields:
                        receipt = f"{text(entry_id)}|{stream}"
                        reclaimed.append(Delivery(run_id=text(fields[b"run"]), receipt=receipt))
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + CONSUMER_PRUNE_INTERVAL_SECONDS
                await self._prune_consumers(streams, worker_id)
        return reclaimed

    async def _prune_consumers(self, streams: list[str], worker_id: str) -> None:
        """Removes consumers of dead workers (nothing pending, long idle), so groups stay small."""
        idle_ms = CONSUMER_PRUNE_IDLE_LEASES * self._conn.settings.lease_seconds * 1000
        for stream in streams:
            try:
                consumers = await self._redis.xinfo_consumers(stream, CONSUMER_GROUP)
            except ResponseError:
                continue
            for consumer in consumers:
                name = text(consumer["name"])
                if name != worker_id and int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_ms:
                    await self._redis.xgroup_delconsumer(stream, CONSUMER_GROUP, name)

    async def register_tasks(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if not ids:
            return
        self._registered.update(ids)
        async with unavailable("registering tasks"):
            await self._redis.sadd(self._keys.tasks(), *ids)

    async def set_task_queues(self, queues: Mapping[str, QueueSpec | None]) -> None:
        if not queues:
            return
        self._task_queues.update(queues)
        declared: dict[str, bytes] = {}
        for task_id, spec in queues.items():
            if spec is not None:
                declared[f"task:{task_id}"] = orjson.dumps([spec.name, spec.concurrency_limit])
                declared[f"queue:{spec.name}"] = orjson.dumps(spec.concurrency_limit)
        undeclared = [f"task:{task_id}" for task_id, spec in queues.items() if spec is None]
        async with unavailable("registering task queues"), self._redis.pipeline(transaction=True) as pipe:
            if declared:
                pipe.hset(self._keys.task_queues(), mapping=declared)  # type: ignore[arg-type]
            if undeclared:
                pipe.hdel(self._keys.task_queues(), *undeclared)
            await pipe.execute()

    async def declared_queue(self, task_id: str, name: str | None) -> QueueSpec:
        async with unavailable("looking up a task's queue"):
            task, limit = await self._redis.hmget(self._keys.task_queues(), [f"task:{task_id}", f"queue:{name}"])
        if name is not None:
            return QueueSpec(name, None if limit is None else orjson.loads(limit))
        if task is None:
            return QueueSpec(default_queue_name(task_id), None)
        declared_name, declared_limit = orjson.loads(task)
        return QueueSpec(declared_name, declared_limit)

    async def task_exists(self, task_id: str) -> bool:
        async with unavailable("looking up a task"):
            return bool(await self._redis.sismember(self._keys.tasks(), task_id))

    async def queue_depths(self) -> dict[str, int]:
        """A task's stream holds its runs until they are acknowledged: the ones claimed (pending in the
        group) are taken off its length. One pipelined round trip for every task."""
        async with unavailable("reading queue depths"):
            task_ids = sorted(text(t) for t in await self._redis.smembers(self._keys.tasks()))
            async with self._redis.pipeline(transaction=False) as pipe:
                for task_id in task_ids:
                    pipe.xlen(self._keys.task_queue(task_id))
                    pipe.xpending(self._keys.task_queue(task_id), CONSUMER_GROUP)
                replies = await pipe.execute(raise_on_error=False)
        depths: dict[str, int] = {}
        for task_id, length, pending in zip(task_ids, replies[::2], replies[1::2], strict=True):
            if isinstance(length, Exception):
                raise BackendUnavailableError(f"Redis is unavailable: reading queue depths failed ({length})")
            claimed = pending["pending"] if isinstance(pending, dict) else 0  # NOGROUP: never claimed from
            depths[task_id] = max(0, int(length) - int(claimed))
        return depths
