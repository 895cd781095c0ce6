"""The broker's roles, and `Broker`: all of them with a lifecycle, as each backend implements it.

A consumer depends on the roles it uses (`RunStore`, `StreamStore`, `Notifier`, `TaskQueue`,
`WaitpointStore`, `JournalStore`, `KeyValueStore`); a new capability is a new role. Both backends implement every
role (memory.py for one process, redis/ for many). Everything above this layer — the engine, the
hub, the servers, the SDK — is backend-agnostic.
"""

from __future__ import annotations

import abc
import secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from bridge.config import Settings
from bridge.errors import StreamFailedError
from bridge.models import Run

MessageHandler = Callable[[str, bytes], None]
ResyncHandler = Callable[[], None]


class RunStore(abc.ABC):
    """Runs, versioned for compare-and-set, indexed by tag and by batch. Storing a run (insert or
    replace) publishes it in the same step on `channels_of(run)` (see `Notifier`)."""

    @abc.abstractmethod
    async def insert_run(self, run: Run, idempotency_scope: str | None, idempotency_ttl: float) -> tuple[Run, bool]:
        """Stores a new run; with an idempotency scope already taken, returns that run and False instead."""

    @abc.abstractmethod
    async def get_run(self, run_id: str) -> Run | None: ...

    @abc.abstractmethod
    async def replace_run(self, run: Run, expected_version: int) -> bool:
        """Stores `run` if the stored version is still `expected_version`, then notifies; False otherwise."""

    @abc.abstractmethod
    async def runs_with_tags(self, tags: list[str], since_ms: int, limit: int) -> list[Run]:
        """Runs having every tag, created at or after `since_ms`, newest first."""

    @abc.abstractmethod
    async def runs_in_batch(self, batch_id: str) -> list[Run]: ...


@dataclass(frozen=True)
class StreamPage:
    """What one storage read of a stream found, all read in one atomic step."""

    epoch: str | None  # the stream's epoch; None while nothing of it is stored (no chunk, no failure)
    length: int  # how many chunks the stream holds
    chunks: list[bytes]  # the chunks asked for, from the read's start index


def new_epoch() -> str:
    """A fresh stream epoch: 16 random hex characters."""
    return secrets.token_hex(8)


class StreamStore(abc.ABC):
    """A run's streams of numbered chunks: its output streams, and its input streams (keys `$in:<id>`).

    Each stream has an epoch, created in the same atomic step as its first chunk (or its failure record)
    and kept as long as the stream: the identity of this incarnation of its storage. Storage that is lost
    (Redis flushed, a failover to a replica that missed writes, the retention passed) takes the epoch with
    it, and a stream written again gets a new one, so a reader that knows the epoch it read under can tell
    that index N no longer holds what it read there (Centrifugo's offset + epoch)."""

    @abc.abstractmethod
    async def append_chunks(
        self, run_id: str, key: str, chunks: Sequence[bytes], first_index: int | None = None
    ) -> int:
        """Stores JSON-encoded chunks at the next indexes of the run's stream `key` (gapless, even with
        concurrent writers), publishes them with the stream's epoch on `stream_channel`
        (`encode_chunks_message`) in the same step, and returns the index of the first.

        With `first_index`, idempotently: they are stored only if the stream holds exactly `first_index`
        chunks; if it already holds these same chunks from `first_index` on (a retry of an append whose
        answer was lost), nothing is stored or published and `first_index` is returned. StreamOrderError
        when the stream holds fewer chunks, or others there. StreamFailedError, storing nothing, once
        the stream failed (`fail_stream`)."""

    @abc.abstractmethod
    async def fail_stream(self, run_id: str, key: str, reason: str) -> int:
        """Marks the stream failed at its current length, atomically, and publishes that on its channel
        (a message without chunks): no chunk is appended to it any more, and readers end with an error at
        that index. Stored like the stream (same retention). Returns the index it stopped at; a stream that
        failed already keeps its first failure, whose index is returned."""

    @abc.abstractmethod
    async def stream_failure(self, run_id: str, key: str) -> tuple[int, str] | None:
        """(the index the stream stopped at, the reason) once it failed, else None."""

    @abc.abstractmethod
    async def append_input(self, run_id: str, key: str, data: bytes, idempotency_key: str | None = None) -> int:
        """Like `append_chunks` for one value, atomically refused for an unknown run (NotFoundError) or a
        finished one (RunFinishedError): a value the run can no longer take is never accepted.

        With an `idempotency_key`, the value is stored together with key -> its index (kept, per run and
        stream, for the retention); a later append with that key stores and publishes nothing and returns
        the first index, also once the run is finished (the value was accepted before)."""

    @abc.abstractmethod
    async def read_chunks(self, run_id: str, key: str, start: int, count: int, max_bytes: int) -> StreamPage:
        """Up to `count` stored chunks from index `start` on, ending before the chunk that would take
        their total size past `max_bytes` (the first one is returned whatever its size), with the stream's
        epoch and length read in the same step. `count` 0 reads only the epoch and length."""

    @abc.abstractmethod
    async def stream_length(self, run_id: str, key: str) -> int: ...


def stream_failed(run_id: str, key: str, next_index: int, reason: str) -> StreamFailedError:
    """The error a failed stream's writer and readers get."""
    return StreamFailedError(
        f"stream {key!r} of run {run_id} failed: it stops at index {next_index} ({reason})", next_index
    )


class Notifier(abc.ABC):
    """Change notification: messages on named channels (channels.py) to this process's listener.

    Contract:
    - Storing a run (insert or replace) publishes its storage bytes on `run:<id>`, on `tag:<tag>`
      for each of its tags, and on `batch:<id>` when it belongs to a batch.
    - Delivery to `on_message` may be lost (Redis pub/sub is at-most-once) only together with a
      call to `on_resync`, after which listeners must re-read state. So a listener that attaches,
      then reads a snapshot, then applies messages with a higher version, never misses a state.
    """

    @abc.abstractmethod
    def set_listener(self, on_message: MessageHandler, on_resync: ResyncHandler) -> None:
        """The hub's callbacks; called on the event loop, must not block."""

    @abc.abstractmethod
    async def listen(self, channels: Iterable[str]) -> None: ...

    @abc.abstractmethod
    async def unlisten(self, channels: Iterable[str]) -> None: ...

    @abc.abstractmethod
    async def publish(self, channel: str, data: bytes) -> None: ...


@dataclass(frozen=True)
class Delivery:
    """A run handed to one worker; acknowledged when the worker is done with it."""

    run_id: str
    receipt: str


@dataclass(frozen=True)
class QueueSpec:
    """A queue as a task declares it (`@task(queue=...)`): its name and concurrency limit (None: unlimited)."""

    name: str
    concurrency_limit: int | None


def default_queue_name(task_id: str) -> str:
    """A task's queue when it declares none (the official name)."""
    return f"task/{task_id}"


@dataclass(frozen=True)
class Gate:
    """One concurrency gate: a queue, or one concurrency key's copy of it, letting `limit` runs hold a slot."""

    queue: str
    key: str | None
    limit: int

    def member(self, run_id: str, task_id: str) -> str:
        """How the gate's waiting set holds a run: its id, then its task (to queue it on promotion)."""
        return f"{run_id}|{task_id}"


class TaskQueue(abc.ABC):
    """The registered tasks, and a queue of runs per task: at-least-once hand-off to workers.

    A run of a gated queue (docs/queues.md) enters its task's queue through `admit` once it holds one of its
    gate's slots; `release` gives the slot back and, in the same atomic step, admits the gate's next waiting
    run (lowest score first). Both are idempotent by run id."""

    @abc.abstractmethod
    async def enqueue(self, task_id: str, run_id: str) -> None: ...

    @abc.abstractmethod
    async def claim(self, worker_id: str, task_ids: list[str], timeout: float) -> Delivery | None:
        """The next queued run of one of `task_ids` for this worker, or None after `timeout` seconds."""

    @abc.abstractmethod
    async def ack(self, delivery: Delivery) -> None: ...

    @abc.abstractmethod
    async def heartbeat(self, worker_id: str, deliveries: Iterable[Delivery]) -> None:
        """Keeps this worker's deliveries from being taken for abandoned."""

    @abc.abstractmethod
    async def reclaim_abandoned(self, worker_id: str) -> list[Delivery]:
        """Deliveries whose worker stopped heartbeating for a lease, now owned by `worker_id`."""

    @abc.abstractmethod
    async def admit(self, gate: Gate, task_id: str, run_id: str, score: int) -> bool:
        """Queues the run (`enqueue`) if it holds a slot of `gate` or one is free (it takes it); else adds it to
        the gate's waiting runs with `score` (kept if already there). Stores `gate.limit` as the gate's limit.
        True when queued."""

    @abc.abstractmethod
    async def release(self, gate: Gate, task_id: str, run_id: str) -> list[str]:
        """Frees the run's slot of `gate` and drops it from the gate's waiting runs (either it may not have),
        then queues waiting runs, lowest score first, while the gate's stored limit leaves slots free; returns
        the ids of the runs it queued."""

    @abc.abstractmethod
    async def crowded_gates(self, count: int) -> list[tuple[Gate, list[str]]]:
        """About `count` gates that have runs waiting for a slot, each with the ids of the runs holding its slots
        (`Gate.limit`: its stored limit). Each call goes on where the previous one stopped, so every such gate
        comes up within (their number / count) + 1 calls."""

    @abc.abstractmethod
    async def gate_state(self, gate: Gate) -> tuple[list[str], list[str]]:
        """(ids of the runs holding a slot, sorted; ids of the waiting runs, next first)."""

    @abc.abstractmethod
    async def register_tasks(self, task_ids: Iterable[str]) -> None: ...

    @abc.abstractmethod
    async def set_task_queues(self, queues: Mapping[str, QueueSpec | None]) -> None:
        """Stores the queue each task declares (a worker's `@task(queue=...)`; None: none) and its limit, by
        the queue's name (another task's trigger may name it)."""

    @abc.abstractmethod
    async def declared_queue(self, task_id: str, name: str | None) -> QueueSpec:
        """The queue a run of the task goes to: `name`, else the one the task declares, else `task/<id>`; with
        the concurrency limit a task declared for that queue (None: none did)."""

    @abc.abstractmethod
    async def task_exists(self, task_id: str) -> bool: ...

    @abc.abstractmethod
    async def queue_depths(self) -> dict[str, int]:
        """Per registered task, how many of its runs are queued and not claimed by a worker yet."""


class WaitpointStore(abc.ABC):
    """Wait tokens: a creation record, then at most one result, and an index of their deadlines."""

    @abc.abstractmethod
    async def insert_waitpoint(
        self,
        token_id: str,
        spec: bytes,
        timeout_at_ms: int,
        ttl: float,
        idempotency_scope: str | None,
        idempotency_ttl: float,
    ) -> tuple[str, bool]:
        """Stores a new token's creation record for `ttl` seconds and indexes its deadline; with an
        idempotency scope already taken, returns the id of the token owning it and False instead."""

    @abc.abstractmethod
    async def get_waitpoint(self, token_id: str) -> tuple[bytes, bytes | None] | None:
        """(creation record, result or None while it waits), or None for an unknown token."""

    @abc.abstractmethod
    async def complete_waitpoint(self, token_id: str, result: bytes, ttl: float) -> bytes | None:
        """Stores `result` unless the token has one (first wins), publishing it on `waitpoint_channel`
        in the same step, and keeps the token at least `ttl` seconds more (never less than it was kept:
        its idempotency key must not outlive it); returns the stored result, or None for an unknown token."""

    @abc.abstractmethod
    async def due_waitpoints(self, now_ms: int, limit: int) -> list[str]:
        """Ids of tokens whose indexed deadline is at or before `now_ms`, earliest first."""

    @abc.abstractmethod
    async def next_waitpoint_deadline(self) -> int | None: ...

    @abc.abstractmethod
    async def forget_waitpoint_deadline(self, token_id: str) -> None: ...

    @abc.abstractmethod
    async def add_waitpoint_waiter(self, token_id: str, run_id: str) -> None:
        """Records `run_id` as parked on the token (a set: adding it again changes nothing), kept as
        long as the token is and no longer; does nothing for an unknown token."""

    @abc.abstractmethod
    async def waitpoint_waiters(self, token_id: str) -> list[str]:
        """The runs parked on the token, in no particular order ([] for an unknown token)."""

    @abc.abstractmethod
    async def waiting_waitpoint_count(self) -> int:
        """How many tokens are neither completed nor timed out: those whose deadline is still indexed."""


class JournalStore(abc.ABC):
    """A run's journal: entries appended in order by the worker holding the run's current attempt,
    kept for the retention after the last accepted write."""

    @abc.abstractmethod
    async def begin_attempt(self, run_id: str, attempt: int) -> bool:
        """Makes `attempt` the run's current attempt if it is higher than the stored one (0 when none);
        False when the stored one is already at least `attempt` (another worker took the run over)."""

    @abc.abstractmethod
    async def append_journal(self, run_id: str, attempt: int, position: int, entry: bytes) -> bool:
        """Stores `entry` as the journal's entry number `position`, atomically, only if `attempt` is the
        run's current attempt and the journal holds exactly `position` entries; else stores nothing
        and returns False (a stale worker, or a concurrent append, lost)."""

    @abc.abstractmethod
    async def read_journal(self, run_id: str) -> list[bytes]:
        """Every entry, in order ([] for none)."""

    @abc.abstractmethod
    async def current_attempt(self, run_id: str) -> int:
        """The run's current attempt, 0 when none began."""


class KeyValueStore(abc.ABC):
    """Shared state that expires: one-time keys and values (a batch's run count, a packet of up to 10 MiB)."""

    @abc.abstractmethod
    async def claim_once(self, key: str, ttl: float) -> bool:
        """True the first time `key` is claimed within `ttl` seconds (one-time tokens)."""

    @abc.abstractmethod
    async def put_value(self, key: str, value: bytes, ttl: float) -> None:
        """Stores a value under `key` for `ttl` seconds."""

    @abc.abstractmethod
    async def get_value(self, key: str, keep_for: float | None = None) -> bytes | None:
        """The value under `key`, None once expired; with `keep_for`, it is then kept that many seconds from now."""


class Broker(RunStore, StreamStore, Notifier, TaskQueue, WaitpointStore, JournalStore, KeyValueStore):
    """Every role, started and stopped together: what a backend implements and a `Bridge` holds."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._on_message: MessageHandler = lambda channel, data: None
        self._on_resync: ResyncHandler = lambda: None

    def set_listener(self, on_message: MessageHandler, on_resync: ResyncHandler) -> None:
        self._on_message = on_message
        self._on_resync = on_resync

    @abc.abstractmethod
    async def start(self) -> None: ...

    @abc.abstractmethod
    async def stop(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raises BackendUnavailableError when the backend cannot serve."""
