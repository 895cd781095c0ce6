"""`RedisBroker`: any number of bridge and worker processes sharing one Redis.

It composes one store per role over one shared `Connection` (connection.py), and owns the
lifecycle: the pub/sub connection (pubsub.py), and what a reconnection must redo.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from bridge.backends.base import Broker, Delivery, Gate, QueueSpec, StreamPage
from bridge.backends.redis.connection import Connection, unavailable
from bridge.backends.redis.journal import RedisJournalStore
from bridge.backends.redis.pubsub import Subscriptions
from bridge.backends.redis.queue import RedisTaskQueue
from bridge.backends.redis.runs import RedisRunStore
from bridge.backends.redis.streams import RedisStreamStore
from bridge.backends.redis.values import RedisKeyValueStore
from bridge.backends.redis.waitpoints import RedisWaitpointStore
from bridge.config import Settings
from bridge.errors import BackendUnavailableError
from bridge.metrics import Metrics
from bridge.models import Run


class RedisBroker(Broker):
    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        super().__init__(settings)
        self._metrics = metrics or Metrics()  # a broker on its own (tests, benchmarks) counts for nobody
        self._conn = Connection(settings)
        self._runs = RedisRunStore(self._conn)
        self._streams = RedisStreamStore(self._conn)
        self._queue = RedisTaskQueue(self._conn)
        self._waitpoints = RedisWaitpointStore(self._conn)
        self._journals = RedisJournalStore(self._conn)
        self._values = RedisKeyValueStore(self._conn)
        self._subscriptions = Subscriptions(
            self._conn.pubsub_nodes, self._conn.keys, self._deliver, self._after_reconnect
        )
        self._started = False

    # lifecycle
    async def start(self) -> None:
        """Opens the pub/sub connection (or starts retrying it in the background, with Redis down)."""
        await self._subscriptions.start()
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await self._subscriptions.close()
        await self._conn.close()

    async def ping(self) -> None:
        if self._started and not self._subscriptions.live:
            raise BackendUnavailableError("Redis is unavailable: the notification connection is reconnecting")
        async with unavailable("PING"):
            await self._conn.ping()

    def _deliver(self, channel: str, data: bytes) -> None:
        self._on_message(channel, data)  # looked up per message: set_listener may come after start

    async def _after_reconnect(self, resync: bool) -> None:
        if resync:
            self._metrics.redis_reconnects.inc()
            await self._queue.after_reconnect()
            self._on_resync()

    # runs
    async def insert_run(self, run: Run, idempotency_scope: str | None, idempotency_ttl: float) -> tuple[Run, bool]:
        return await self._runs.insert_run(run, idempotency_scope, idempotency_ttl)

    async def get_run(self, run_id: str) -> Run | None:
        return await self._runs.get_run(run_id)

    async def replace_run(self, run: Run, expected_version: int) -> bool:
        return await self._runs.replace_run(run, expected_version)

    async def runs_with_tags(self, tags: list[str], since_ms: int, limit: int) -> list[Run]:
        return await self._runs.runs_with_tags(tags, since_ms, limit)

    async def runs_in_batch(self, batch_id: str) -> list[Run]:
        return await self._runs.runs_in_batch(batch_id)

    # streams
    async def append_chunks(
        self, run_id: str, key: str, chunks: Sequence[bytes], first_index: int | None = None
    ) -> int:
        return await self._streams.append_chunks(run_id, key, chunks, first_index)

    async def fail_stream(self, run_id: str, key: str, reason: str) -> int:
        return await self._streams.fail_stream(run_id, key, reason)

    async def stream_failure(self, run_id: str, key: str) -> tuple[int, str] | None:
        return await self._streams.stream_failure(run_id, key)

    async def append_input(self, run_id: str, key: str, data: bytes, idempotency_key: str | None = None) -> int:
        return await self._streams.append_input(run_id, key, data, idempotency_key)

    async def read_chunks(self, run_id: str, key: str, start: int, count: int, max_bytes: int) -> StreamPage:
        return await self._streams.read_chunks(run_id, key, start, count, max_bytes)

    async def stream_length(self, run_id: str, key: str) -> int:
        return await self._streams.stream_length(run_id, key)

    # change notification
    async def listen(self, channels: Iterable[str]) -> None:
        await self._subscriptions.listen(channels)

    async def unlisten(self, channels: Iterable[str]) -> None:
        await self._subscriptions.unlisten(channels)

    async def publish(self, channel: str, data: bytes) -> None:
        async with unavailable("publishing"):
            await self._conn.publish(self._conn.keys.wire(channel), data)

    # task queue
    async def enqueue(self, task_id: str, run_id: str) -> None:
        await self._queue.enqueue(task_id, run_id)

    async def claim(self, worker_id: str, task_ids: list[str], timeout: float) -> Delivery | None:
        return await self._queue.claim(worker_id, task_ids, timeout)

    async def ack(self, delivery: Delivery) -> None:
        await self._queue.ack(delivery)

    async def heartbeat(self, worker_id: str, deliveries: Iterable[Delivery]) -> None:
        await self._queue.heartbeat(worker_id, deliveries)

    async def reclaim_abandoned(self, worker_id: str) -> list[Delivery]:
        return await self._queue.reclaim_abandoned(worker_id)

    async def admit(self, gate: Gate, task_id: str, run_id: str, score: int) -> bool:
        return await self._queue.admit(gate, task_id, run_id, score)

    async def release(self, gate: Gate, task_id: str, run_id: str) -> list[str]:
        return await self._queue.release(gate, task_id, run_id)

    async def crowded_gates(self, count: int) -> list[tuple[Gate, list[str]]]:
        return await self._queue.crowded_gates(count)

    async def gate_state(self, gate: Gate) -> tuple[list[str], list[str]]:
        return await self._queue.gate_state(gate)

    async def register_tasks(self, task_ids: Iterable[str]) -> None:
        await self._queue.register_tasks(task_ids)

    async def set_task_queues(self, queues: Mapping[str, QueueSpec | None]) -> None:
        await self._queue.set_task_queues(queues)

    async def declared_queue(self, task_id: str, name: str | None) -> QueueSpec:
        return await self._queue.declared_queue(task_id, name)

    async def task_exists(self, task_id: str) -> bool:
        return await self._queue.task_exists(task_id)

    async def queue_depths(self) -> dict[str, int]:
        return await self._queue.queue_depths()

    # wait tokens
    async def insert_waitpoint(
        self,
        token_id: str,
        spec: bytes,
        timeout_at_ms: int,
        ttl: float,
        idempotency_scope: str | None,
        idempotency_ttl: float,
    ) -> tuple[str, bool]:
        return await self._waitpoints.insert_waitpoint(
            token_id, spec, timeout_at_ms, ttl, idempotency_scope, idempotency_ttl
        )

    async def get_waitpoint(self, token_id: str) -> tuple[bytes, bytes | None] | None:
        return await self._waitpoints.get_waitpoint(token_id)

    async def complete_waitpoint(self, token_id: str, result: bytes, ttl: float) -> bytes | None:
        return await self._waitpoints.complete_waitpoint(token_id, result, ttl)

    async def due_waitpoints(self, now_ms: int, limit: int) -> list[str]:
        return await self._waitpoints.due_waitpoints(now_ms, limit)

    async def next_waitpoint_deadline(self) -> int | None:
        return await self._waitpoints.next_waitpoint_deadline()

    async def forget_waitpoint_deadline(self, token_id: str) -> None:
        await self._waitpoints.forget_waitpoint_deadline(token_id)

    async def add_waitpoint_waiter(self, token_id: str, run_id: str) -> None:
        await self._waitpoints.add_waitpoint_waiter(token_id, run_id)

    async def waitpoint_waiters(self, token_id: str) -> list[str]:
        return await self._waitpoints.waitpoint_waiters(token_id)

    async def waiting_waitpoint_count(self) -> int:
        return await self._waitpoints.waiting_waitpoint_count()

    # run journals
    async def begin_attempt(self, run_id: str, attempt: int) -> bool:
        return await self._journals.begin_attempt(run_id, attempt)

    async def append_journal(self, run_id: str, attempt: int, position: int, entry: bytes) -> bool:
        return await self._journals.append_journal(run_id, attempt, position, entry)

    async def read_journal(self, run_id: str) -> list[bytes]:
        return await self._journals.read_journal(run_id)

    async def current_attempt(self, run_id: str) -> int:
        return await self._journals.current_attempt(run_id)

    # small shared state
    async def claim_once(self, key: str, ttl: float) -> bool:
        return await self._values.claim_once(key, ttl)

    async def put_value(self, key: str, value: bytes, ttl: float) -> None:
        await self._values.put_value(key, value, ttl)

    async def get_value(self, key: str, keep_for: float | None = None) -> bytes | None:
        return await self._values.get_value(key, keep_for)
