"""The in-process broker: the default, for one process with nothing to install.

Notifications are delivered synchronously from the storing call, so none is ever lost and
`on_resync` is never needed. Retention is enforced by a sweep that runs with the broker. Every stream's
epoch is the broker's own, new in every process: nothing outlives the process, so a reader resuming
with an epoch of an earlier process is told its stream was reset.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import sys
import time
from array import array
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from bridge.aio import cancel_and_wait
from bridge.backends.base import (
    Broker,
    Delivery,
    Gate,
    QueueSpec,
    StreamPage,
    default_queue_name,
    new_epoch,
    stream_failed,
)
from bridge.backends.channels import channels_of, encode_chunks_message, stream_channel, waitpoint_channel
from bridge.config import Settings
from bridge.errors import NotFoundError, RunFinishedError, StreamOrderError
from bridge.models import Run

SWEEP_INTERVAL_SECONDS = 1.0
DEADLINE_HEAP_SLACK = 1024  # forgotten deadlines tolerated in the heap beyond the live ones
V = TypeVar("V")


class _ExpiringMap(Generic[V]):
    """Keys that vanish at a monotonic deadline: read lazily, swept in deadline order."""

    def __init__(self) -> None:
        self._values: dict[str, tuple[V, float]] = {}
        self._deadlines: list[tuple[float, str]] = []

    def get(self, key: str, now: float) -> V | None:
        entry = self._values.get(key)
        return entry[0] if entry and entry[1] > now else None

    def deadline(self, key: str) -> float:
        entry = self._values.get(key)
        return entry[1] if entry else 0.0

    def set(self, key: str, value: V, deadline: float) -> None:
        self._values[key] = (value, deadline)
        heapq.heappush(self._deadlines, (deadline, key))

    def discard(self, key: str) -> None:
        self._values.pop(key, None)  # its heap entries no longer match: evict skips them

    def evict(self, now: float) -> list[str]:
        """Drops the keys whose deadline passed, and returns them."""
        evicted: list[str] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, key = heapq.heappop(self._deadlines)
            entry = self._values.get(key)
            if entry and entry[1] == deadline:
                del self._values[key]
                evicted.append(key)
        return evicted


class _Stream:
    """One stream's chunks, packed: their bytes end to end and where each ends.

    Not a list of the stored objects: orjson's `dumps` leaves each result in its ~4 KiB write buffer
    (tracemalloc: 4,097 bytes for a 2-byte chunk), so keeping them kept ~4 KiB per chunk for the
    retention. Copied in here, a chunk costs its bytes plus 8 (plus the containers' growth slack)."""

    __slots__ = ("_data", "_ends")

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("Q")  # chunk i is _data[_ends[i - 1]:_ends[i]] (from 0 for the first)

    def __len__(self) -> int:
        return len(self._ends)

    def extend(self, chunks: Sequence[bytes]) -> None:
        for chunk in chunks:
            self._data += chunk
            self._ends.append(len(self._data))

    def read(self, start: int, count: int, max_bytes: int) -> list[bytes]:
        ends, stop = self._ends, min(start + count, len(self._ends))
        if start >= stop:
            return []
        begin = ends[start - 1] if start else 0
        end = start + 1  # the first chunk whatever its size
        while end < stop and ends[end] - begin <= max_bytes:
            end += 1
        view = memoryview(self._data)  # slices copy once, into the returned bytes
        try:
            return [bytes(view[ends[i - 1] if i else 0 : ends[i]]) for i in range(start, end)]
        finally:
            view.release()  # a live export would make the next extend fail (BufferError)


@dataclass
class _GateState:
    limit: int
    holding: set[str] = field(default_factory=set)  # run ids holding a slot
    waiting: dict[str, tuple[int, int]] = field(default_factory=dict)  # member -> (score, arrival)
    # (score, arrival, member), lowest first; an entry whose member left `waiting` is skipped when popped
    line: list[tuple[int, int, str]] = field(default_factory=list)

    def wait(self, member: str, score: int, arrival: int) -> None:
        if member not in self.waiting:  # a run already in line keeps its place
            self.waiting[member] = (score, arrival)
            heapq.heappush(self.line, (score, arrival, member))

    def next_waiting(self) -> str | None:
        while self.line:
            score, arrival, member = heapq.heappop(self.line)
            if self.waiting.get(member) == (score, arrival):
                del self.waiting[member]
                return member
        return None


@dataclass
class _Journal:
    attempt: int = 0
    entries: list[bytes] = field(default_factory=list)


class MemoryBroker(Broker):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._runs: dict[str, bytes] = {}
        self._expiry: dict[str, float] = {}  # run id -> monotonic deadline
        self._expiry_heap: list[tuple[float, str]] = []
        self._by_tag: dict[str, dict[str, int]] = {}  # tag -> run id -> createdAt ms
        self._by_batch: dict[str, list[str]] = {}
        self._streams: dict[str, dict[str, _Stream]] = {}  # run id -> key -> chunks
        self._epoch = new_epoch()  # every stream's: this process's storage
        self._stream_failures: dict[str, dict[str, tuple[int, str]]] = {}  # run id -> key -> (next index, reason)
        # run id -> (input stream key, idempotency key) -> the index it stored; dropped with the run
        self._input_keys: dict[str, dict[tuple[str, str], int]] = {}
        self._idempotency: _ExpiringMap[str] = _ExpiringMap()  # scope -> run or token id
        self._once: _ExpiringMap[str] = _ExpiringMap()
        self._values: _ExpiringMap[bytes] = _ExpiringMap()
        self._waitpoints: _ExpiringMap[tuple[bytes, bytes | None]] = _ExpiringMap()  # id -> (spec, result)
        self._deadlines: dict[str, int] = {}  # token id -> its deadline (ms), until fired
        self._deadline_heap: list[tuple[int, str]] = []
        self._waiters: dict[str, set[str]] = {}  # token id -> run ids parked on it, dropped with the token
        # run id -> its journal: expires like Redis's keys, and is also dropped with its run
        self._journals: _ExpiringMap[_Journal] = _ExpiringMap()
        self._listening: dict[str, int] = {}
        self._queues: dict[str, deque[str]] = {}
        self._enqueued = asyncio.Condition()
        self._receipts = itertools.count(1)
        self._tasks: set[str] = set()
        self._task_queues: dict[str, QueueSpec] = {}
        self._queue_limits: dict[str, int | None] = {}  # queue name -> the limit a task declared for it
        self._gates: dict[tuple[str, str | None], _GateState] = {}  # dropped once nothing holds or waits
        self._arrivals = itertools.count()  # orders waiting runs of the same score by arrival, as Redis's sequence
        self._crowded_turn = 0  # where `crowded_gates` goes on
        self._sweeper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        await cancel_and_wait(self._sweeper)

    async def ping(self) -> None:
        return None

    # runs
    async def insert_run(self, run: Run, idempotency_scope: str | None, idempotency_ttl: float) -> tuple[Run, bool]:
        if idempotency_scope:
            now = time.monotonic()
            existing = self._idempotency.get(idempotency_scope, now)
            if existing is not None and existing in self._runs:
                return Run.from_storage(self._runs[existing]), False
            self._idempotency.set(idempotency_scope, run.id, now + idempotency_ttl)
        for tag in run.tags:
            self._by_tag.setdefault(tag, {})[run.id] = run.created_at
        if run.batch_id:
            self._by_batch.setdefault(run.batch_id, []).append(run.id)
        self._store(run)
        return run, True

    async def get_run(self, run_id: str) -> Run | None:
        raw = self._runs.get(run_id)
        return Run.from_storage(raw) if raw is not None else None

    async def replace_run(self, run: Run, expected_version: int) -> bool:
        raw = self._runs.get(run.id)
        if raw is None or Run.from_storage(raw).version != expected_version:
            return False
        self._store(run)
        return True

    def _store(self, run: Run) -> None:
        data = run.to_storage()
        self._runs[run.id] = data
        deadline = time.monotonic() + self.settings.retention_seconds
        self._expiry[run.id] = deadline
        heapq.heappush(self._expiry_heap, (deadline, run.id))
        for channel in channels_of(run):
            if channel in self._listening:
                self._on_message(channel, data)

    async def runs_with_tags(self, tags: list[str], since_ms: int, limit: int) -> list[Run]:
        indexes = [self._by_tag.get(tag, {}) for tag in tags]
        if not indexes:
            return []
        smallest = min(indexes, key=len)
        # Newest first; reversed insertion order keeps runs created in the same millisecond newest first too.
        ids = [rid for rid in reversed(smallest) if smallest[rid] >= since_ms and all(rid in i for i in indexes)]
        ids.sort(key=lambda rid: smallest[rid], reverse=True)
        return [Run.from_storage(self._runs[rid]) for rid in ids[:limit] if rid in self._runs]

    async def runs_in_batch(self, batch_id: str) -> list[Run]:
        return [Run.from_storage(self._runs[rid]) for rid in self._by_batch.get(batch_id, []) if rid in self._runs]

    # streams
    async def append_chunks(
        self, run_id: str, key: str, chunks: Sequence[bytes], first_index: int | None = None
    ) -> int:
        failure = self._stream_failures.get(run_id, {}).get(key)
        if failure is not None:
            raise stream_failed(run_id, key, *failure)
        streams = self._streams.setdefault(run_id, {})
        stream = streams.get(key)
        if stream is None:
            stream = streams[key] = _Stream()
        first = len(stream)
        if first_index is not None and first != first_index:
            if first > first_index and stream.read(first_index, len(chunks), sys.maxsize) == list(chunks):
                return first_index  # stored already: a retry
            raise StreamOrderError(
                f"stream {key!r} of run {run_id} holds {first} chunks, not the {first_index} expected before these",
                fewer=first < first_index,
            )
        stream.extend(chunks)
        channel = stream_channel(run_id, key)
        if channel in self._listening:
            self._on_message(channel, encode_chunks_message(first, self._epoch, chunks))
        return first

    async def fail_stream(self, run_id: str, key: str, reason: str) -> int:
        failures = self._stream_failures.setdefault(run_id, {})
        if key not in failures:
            failures[key] = (len(self._streams.get(run_id, {}).get(key, [])), reason)
            channel = stream_channel(run_id, key)
            if channel in self._listening:
                self._on_message(channel, encode_chunks_message(failures[key][0], self._epoch, []))
        return failures[key][0]

    async def stream_failure(self, run_id: str, key: str) -> tuple[int, str] | None:
        return self._stream_failures.get(run_id, {}).get(key)

    async def append_input(self, run_id: str, key: str, data: bytes, idempotency_key: str | None = None) -> int:
        raw = self._runs.get(run_id)
        if raw is None:
            raise NotFoundError(f"Run not found: {run_id}")
        if idempotency_key is not None:
            first = self._input_keys.get(run_id, {}).get((key, idempotency_key))
            if first is not None:
                return first
        if Run.from_storage(raw).status.is_final:
            raise RunFinishedError("Cannot send to input stream on a completed run")
        index = await self.append_chunks(run_id, key, [data])  # it awaits nothing: still the same step
        if idempotency_key is not None:
            self._input_keys.setdefault(run_id, {})[(key, idempotency_key)] = index
        return index

    async def read_chunks(self, run_id: str, key: str, start: int, count: int, max_bytes: int) -> StreamPage:
        stream = self._streams.get(run_id, {}).get(key)
        length = len(stream) if stream is not None else 0
        stored = length > 0 or key in self._stream_failures.get(run_id, {})
        chunks = stream.read(start, count, max_bytes) if stream is not None else []
        return StreamPage(self._epoch if stored else None, length, chunks)

    async def stream_length(self, run_id: str, key: str) -> int:
        stream = self._streams.get(run_id, {}).get(key)
        return len(stream) if stream is not None else 0

    # change notification
    async def listen(self, channels: Iterable[str]) -> None:
        for channel in channels:
            self._listening[channel] = self._listening.get(channel, 0) + 1

    async def unlisten(self, channels: Iterable[str]) -> None:
        for channel in channels:
            count = self._listening.get(channel, 0) - 1
            if count <= 0:
                self._listening.pop(channel, None)
            else:
                self._listening[channel] = count

    async def publish(self, channel: str, data: bytes) -> None:
        if channel in self._listening:
            self._on_message(channel, data)

    # task queue
    async def enqueue(self, task_id: str, run_id: str) -> None:
        async with self._enqueued:
            self._queues.setdefault(task_id, deque()).append(run_id)
            self._enqueued.notify_all()

    async def claim(self, worker_id: str, task_ids: list[str], timeout: float) -> Delivery | None:
        def next_run_id() -> str | None:
            for task_id in task_ids:
                queue = self._queues.get(task_id)
                if queue:
                    return queue.popleft()
            return None

        async with self._enqueued:
            try:
                async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it can swallow the caller's cancel
                    run_id = await self._enqueued.wait_for(next_run_id)
            except TimeoutError:
                return None
        if run_id is None:  # wait_for returns only a truthy predicate result; this narrows the type
            return None
        return Delivery(run_id=run_id, receipt=str(next(self._receipts)))

    async def ack(self, delivery: Delivery) -> None:
        return None

    async def heartbeat(self, worker_id: str, deliveries: Iterable[Delivery]) -> None:
        return None

    async def reclaim_abandoned(self, worker_id: str) -> list[Delivery]:
        return []  # workers live in this process: none can die without the broker

    async def admit(self, gate: Gate, task_id: str, run_id: str, score: int) -> bool:
        state = self._gates.setdefault((gate.queue, gate.key), _GateState(gate.limit))
        state.limit = gate.limit
        if run_id in state.holding:
            await self.enqueue(task_id, run_id)
            return True
        state.wait(gate.member(run_id, task_id), score, next(self._arrivals))
        return run_id in await self._admit_waiting(gate)

    async def release(self, gate: Gate, task_id: str, run_id: str) -> list[str]:
        state = self._gates.get((gate.queue, gate.key))
        if state is None:
            return []
        state.holding.discard(run_id)
        state.waiting.pop(gate.member(run_id, task_id), None)
        return await self._admit_waiting(gate)

    async def _admit_waiting(self, gate: Gate) -> list[str]:
        """Queues waiting runs, lowest score first, while the gate has free slots (gate.lua's loop)."""
        state = self._gates[(gate.queue, gate.key)]
        queued: list[str] = []
        while len(state.holding) < state.limit and (member := state.next_waiting()) is not None:
            run_id, _, task_id = member.partition("|")
            state.holding.add(run_id)
            await self.enqueue(task_id, run_id)
            queued.append(run_id)
        if not state.holding and not state.waiting:
            del self._gates[(gate.queue, gate.key)]
        return queued

    async def crowded_gates(self, count: int) -> list[tuple[Gate, list[str]]]:
        crowded = [(name, state) for name, state in self._gates.items() if state.waiting]
        start = self._crowded_turn % len(crowded) if crowded else 0
        picked = (crowded[start:] + crowded[:start])[:count]
        self._crowded_turn = start + len(picked)
        return [(Gate(queue, key, state.limit), sorted(state.holding)) for (queue, key), state in picked]

    async def gate_state(self, gate: Gate) -> tuple[list[str], list[str]]:
        state = self._gates.get((gate.queue, gate.key))
        if state is None:
            return [], []
        waiting = sorted(state.waiting, key=state.waiting.__getitem__)
        return sorted(state.holding), [member.partition("|")[0] for member in waiting]

    async def register_tasks(self, task_ids: Iterable[str]) -> None:
        self._tasks.update(task_ids)

    async def set_task_queues(self, queues: Mapping[str, QueueSpec | None]) -> None:
        for task_id, spec in queues.items():
            if spec is None:
                self._task_queues.pop(task_id, None)
            else:
                self._task_queues[task_id] = spec
                self._queue_limits[spec.name] = spec.concurrency_limit

    async def declared_queue(self, task_id: str, name: str | None) -> QueueSpec:
        if name is None:
            return self._task_queues.get(task_id) or QueueSpec(default_queue_name(task_id), None)
        return QueueSpec(name, self._queue_limits.get(name))

    async def task_exists(self, task_id: str) -> bool:
        return task_id in self._tasks

    async def queue_depths(self) -> dict[str, int]:
        return {task_id: len(self._queues.get(task_id, ())) for task_id in self._tasks}

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
        now = time.monotonic()
        if idempotency_scope:
            existing = self._idempotency.get(idempotency_scope, now)
            if existing is not None and self._waitpoints.get(existing, now) is not None:
                return existing, False
            self._idempotency.set(idempotency_scope, token_id, now + idempotency_ttl)
        self._waitpoints.set(token_id, (spec, None), now + ttl)
        self._deadlines[token_id] = timeout_at_ms
        heapq.heappush(self._deadline_heap, (timeout_at_ms, token_id))
        return token_id, True

    async def get_waitpoint(self, token_id: str) -> tuple[bytes, bytes | None] | None:
        return self._waitpoints.get(token_id, time.monotonic())

    async def complete_waitpoint(self, token_id: str, result: bytes, ttl: float) -> bytes | None:
        now = time.monotonic()
        stored = self._waitpoints.get(token_id, now)
        if stored is None:
            return None
        spec, existing = stored
        if existing is not None:
            return existing
        self._waitpoints.set(token_id, (spec, result), max(now + ttl, self._waitpoints.deadline(token_id)))
        await self.publish(waitpoint_channel(token_id), result)
        return result

    async def due_waitpoints(self, now_ms: int, limit: int) -> list[str]:
        # The `limit` smallest heap entries, walked from the root (O(limit log limit), not O(heap)).
        heap, due = self._deadline_heap, list[str]()
        frontier = [(heap[0][0], 0)] if heap else []
        while frontier and len(due) < limit:
            deadline, position = heapq.heappop(frontier)
            if deadline > now_ms:
                break
            token_id = heap[position][1]
            if self._deadlines.get(token_id) == deadline:
                due.append(token_id)
            for child in (2 * position + 1, 2 * position + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child][0], child))
        return due

    async def next_waitpoint_deadline(self) -> int | None:
        self._drop_stale_deadlines()
        return self._deadline_heap[0][0] if self._deadline_heap else None

    async def forget_waitpoint_deadline(self, token_id: str) -> None:
        self._deadlines.pop(token_id, None)
        self._drop_stale_deadlines()

    async def add_waitpoint_waiter(self, token_id: str, run_id: str) -> None:
        if self._waitpoints.get(token_id, time.monotonic()) is not None:
            self._waiters.setdefault(token_id, set()).add(run_id)

    async def waitpoint_waiters(self, token_id: str) -> list[str]:
        if self._waitpoints.get(token_id, time.monotonic()) is None:
            return []  # expired, not swept yet
        return list(self._waiters.get(token_id, ()))

    async def waiting_waitpoint_count(self) -> int:
        return len(self._deadlines)

    def _drop_stale_deadlines(self) -> None:
        """Pops forgotten deadlines off the top; rebuilds the heap when they are most of it (tokens
        completed long before their deadline), so it stays proportional to the live ones."""
        heap = self._deadline_heap
        while heap and self._deadlines.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)
        if len(heap) > 2 * len(self._deadlines) + DEADLINE_HEAP_SLACK:
            self._deadline_heap = [(deadline, token_id) for token_id, deadline in self._deadlines.items()]
            heapq.heapify(self._deadline_heap)

    # run journals
    async def begin_attempt(self, run_id: str, attempt: int) -> bool:
        now = time.monotonic()
        journal = self._journal(run_id, now)
        if journal.attempt >= attempt:
            return False
        journal.attempt = attempt
        self._journals.set(run_id, journal, now + self.settings.retention_seconds)
        return True

    async def append_journal(self, run_id: str, attempt: int, position: int, entry: bytes) -> bool:
        now = time.monotonic()
        journal = self._journal(run_id, now)
        if journal.attempt != attempt or len(journal.entries) != position:
            return False
        journal.entries.append(entry)
        self._journals.set(run_id, journal, now + self.settings.retention_seconds)
        return True

    async def read_journal(self, run_id: str) -> list[bytes]:
        return list(self._journal(run_id, time.monotonic()).entries)

    async def current_attempt(self, run_id: str) -> int:
        return self._journal(run_id, time.monotonic()).attempt

    def _journal(self, run_id: str, now: float) -> _Journal:
        """The run's stored journal, or a new empty one (stored by the caller when it writes)."""
        return self._journals.get(run_id, now) or _Journal()

    # small shared state
    async def claim_once(self, key: str, ttl: float) -> bool:
        now = time.monotonic()
        if self._once.get(key, now) is not None:
            return False
        self._once.set(key, key, now + ttl)
        return True

    async def put_value(self, key: str, value: bytes, ttl: float) -> None:
        self._values.set(key, value, time.monotonic() + ttl)

    async def get_value(self, key: str, keep_for: float | None = None) -> bytes | None:
        now = time.monotonic()
        value = self._values.get(key, now)
        if value is not None and keep_for is not None:
            self._values.set(key, value, now + keep_for)
        return value

    # retention
    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            self.evict_expired(time.monotonic())

    def evict_expired(self, now: float) -> None:
        while self._expiry_heap and self._expiry_heap[0][0] <= now:
            deadline, run_id = heapq.heappop(self._expiry_heap)
            if self._expiry.get(run_id) != deadline:
                continue  # stored again since: a later heap entry carries its deadline
            raw = self._runs.pop(run_id)
            del self._expiry[run_id]
            self._streams.pop(run_id, None)
            self._stream_failures.pop(run_id, None)
            self._input_keys.pop(run_id, None)
            self._journals.discard(run_id)
            run = Run.from_storage(raw)
            for tag in run.tags:
                index = self._by_tag.get(tag)
                if index is not None:
                    index.pop(run_id, None)
                    if not index:
                        del self._by_tag[tag]
            if run.batch_id and run.batch_id in self._by_batch:
                self._by_batch[run.batch_id] = [r for r in self._by_batch[run.batch_id] if r != run_id]
                if not self._by_batch[run.batch_id]:
                    del self._by_batch[run.batch_id]
        self._idempotency.evict(now)
        self._once.evict(now)
        self._values.evict(now)
        self._journals.evict(now)
        for token_id in self._waitpoints.evict(now):
            self._waiters.pop(token_id, None)
