"""Output streams: numbered chunks a task appends, read back exactly once and in order.

`StreamWriter` batches a producer's appends: while one append is stored, the next chunks queue
up and go in the following call, so one producer is not bound by a round trip per chunk.

`StreamReader` yields every chunk from a start index, once, in order, whether it was stored
before the reader came or arrives while it reads: it attaches its live listener first, reads the
history, then follows live chunks deduplicated by index. A gap in the live feed (lost
notifications, or a reader too slow for its bounded buffer) sends it back to storage from its
next index, so a slow reader is paused, never fed unboundedly, and loses nothing. It ends once
the run has finished and every chunk was read; or, once it read every chunk of a stream that failed
(its writer gave up storing it), with StreamFailedError.

A reader knows the epoch of what it read (given by a resuming client, else learned from its first
read): every storage read returns the stream's epoch and length in the same step, and every live
message its epoch. Storage of another epoch, or holding fewer chunks than the reader already read,
means the stream's storage was lost or replaced: the reader ends with StreamResetError rather than go
on at an index that now holds something else. A live message handled while a storage read is under way
may be of chunks stored after that read: its epoch is checked against the next read, not that one. A
reader waiting for chunks reads storage again every STORAGE_CHECK_SECONDS, so a stream (or run) lost
with nobody writing to it is noticed too.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import orjson

from bridge.backends.base import Broker, StreamPage, StreamStore, stream_failed
from bridge.backends.channels import run_channel, stream_channel
from bridge.errors import (
    BackendUnavailableError,
    BridgeError,
    PayloadTooLargeError,
    StreamFailedError,
    StreamOrderError,
    StreamResetError,
    ValidationError,
)
from bridge.metrics import Metrics
from bridge.runtime.engine import RunEngine
from bridge.runtime.hub import Hub, Message
from bridge.tracing import Attributes, span

T = TypeVar("T")
log = logging.getLogger(__name__)

READ_PAGE_CHUNKS = 1000  # chunks fetched from storage per read while catching up...
READ_PAGE_BYTES = 8 * 1024 * 1024  # ...and at most this many bytes of them (or two of the largest chunks)
LIVE_BUFFER_CHUNKS = 1000  # live chunks a reader holds before it falls back to storage...
LIVE_BUFFER_BYTES = 8 * 1024 * 1024  # ...and at most this many bytes of them
WRITE_BATCH_CHUNKS = 500  # chunks stored per append call...
WRITE_BATCH_BYTES = 4 * 1024 * 1024  # ...and at most this many bytes (or one chunk, if larger)
WRITE_QUEUE_CHUNKS = 10_000  # chunks a writer holds before `append` waits (backpressure)
# A batch the backend failed to store is tried again, at the same index, after 0.05, 0.1, 0.2, ... s (at most
# WRITE_RETRY_MAX_DELAY apart): at most WRITE_RETRY_ATTEMPTS tries, none started after WRITE_RETRY_SECONDS
# (about 14 s of outage survived); then the stream fails.
WRITE_RETRY_ATTEMPTS = 12
WRITE_RETRY_SECONDS = 15.0
WRITE_RETRY_FIRST_DELAY = 0.05
WRITE_RETRY_MAX_DELAY = 2.0
MAX_STREAM_KEY_LENGTH = 64
# The highest index a reader may start from: exact in every JSON client (JavaScript), and far inside
# what a backend stores (a Redis stream entry id is 0-<index + 1>, at most 2^64 - 1).
MAX_STREAM_INDEX = 2**53 - 1
MAX_IDLE_SECONDS = 600  # the longest idle timeout a client may ask of a stream reader (both protocols)
MAX_EPOCH_LENGTH = 64  # a stream epoch a client sends back (the bridge's are 16 hex characters)
# A reader waiting this long for a chunk reads storage again (the stream's epoch and length, and the run): a
# stream lost while nobody writes to it sends no notification.
STORAGE_CHECK_SECONDS = 10.0


def check_stream_key(key: str) -> str:
    if not isinstance(key, str) or not key or len(key) > MAX_STREAM_KEY_LENGTH or not key.isprintable():
        raise ValidationError(f"a stream key is 1 to {MAX_STREAM_KEY_LENGTH} printable characters")
    if key.startswith("$"):
        raise ValidationError("a stream key cannot start with $ (reserved for input streams)")
    return key


def check_start_index(index: object, what: str = "startIndex") -> int:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= MAX_STREAM_INDEX:
        raise ValidationError(f"{what} must be a whole number from 0 to {MAX_STREAM_INDEX}")
    return index


def check_epoch(epoch: object, what: str = "epoch") -> str | None:
    """A stream epoch a client sends back, or None for none."""
    if epoch is None:
        return None
    if (
        not isinstance(epoch, str)
        or not 1 <= len(epoch) <= MAX_EPOCH_LENGTH
        or not (epoch.isascii() and epoch.isalnum())
    ):
        raise ValidationError(f"{what} must be 1 to {MAX_EPOCH_LENGTH} ASCII letters and digits, as the bridge sent it")
    return epoch


def check_position(run_id: str, key: str, page: StreamPage, next_index: int, epoch: str | None) -> None:
    """StreamResetError unless a reader at `next_index`, which read what it has under `epoch` (None: unknown),
    can go on with what storage holds now (`page`): the same epoch, and at least the chunks it read."""
    if page.length < next_index or (epoch is not None and page.epoch != epoch):
        raise StreamResetError(
            f"stream {key!r} of run {run_id} was reset: its storage was lost or replaced (it holds {page.length}"
            f" chunks, epoch {page.epoch or 'none'}; this reader is at index {next_index}, epoch"
            f" {epoch or 'unknown'}): read it again from index 0, without an epoch",
            next_index,
        )


@dataclass(frozen=True)
class Chunk:
    index: int
    data: bytes  # the chunk's JSON text, as the writer encoded it

    def value(self) -> object:
        return orjson.loads(self.data)


class StreamReader:
    def __init__(
        self,
        hub: Hub,
        broker: Broker,
        run_id: str,
        key: str,
        start_index: int = 0,
        idle_timeout: float | None = None,
        epoch: str | None = None,
    ) -> None:
        self._hub = hub
        self._broker = broker
        self.run_id = run_id
        self.key = key
        self.next_index = check_start_index(start_index)
        self.epoch = epoch  # of the chunks before `next_index`: given by a resuming client, else learned
        self._idle_timeout = idle_timeout
        self._live: deque[tuple[int, bytes]] = deque()
        self._live_bytes = 0
        self._behind = True  # read storage before trusting the live feed
        self._run_finished = False
        self._run_seen = False  # the run was stored when the reader read it: vanishing later is a reset
        self._run_unsure = False  # run notifications may have been lost: re-read the run
        self._failure_unsure = True  # the stream may have failed: read its failure record at the next catch-up
        self._failure: tuple[int, str] | None = None  # (where it stopped, why) once read
        self.timed_out = False  # the last `chunks()` ended on the idle timeout, not with the run
        self._woken = asyncio.Event()
        # A consumer's synchronous taker of live chunks (index, JSON) while `chunks()` waits caught up: True if it
        # took the chunk, False to have it buffered and yielded as usual (e.g. no room for it now).
        self.live_sink: Callable[[int, bytes], bool] | None = None
        self._parked = False  # `chunks()` waits for news with nothing buffered: no chunk is between yield and use
        self._idle_since = 0.0  # loop time of the last chunk read (yielded or taken by `live_sink`)
        self._channels = (stream_channel(run_id, key), run_channel(run_id))
        limits = broker.settings.limits
        self._largest_chunk = max(limits.max_chunk_bytes, limits.max_payload_bytes)  # output chunk or input value
        self._page_bytes = max(READ_PAGE_BYTES, 2 * self._largest_chunk)

    async def __aenter__(self) -> StreamReader:
        try:
            for channel in self._channels:
                await self._hub.attach(channel, self._on_message)
            await self._read_run()
        except BaseException:
            await self.__aexit__()  # not entered: `async with` will not exit, so detach here
            raise
        return self

    async def _read_run(self) -> None:
        self._run_unsure = False
        run = await self._broker.get_run(self.run_id)
        if run is None and self._run_seen:
            raise StreamResetError(
                f"stream {self.key!r} of run {self.run_id} was reset: the run vanished from storage (lost, or past"
                " its retention) while the stream was read",
                self.next_index,
            )
        self._run_seen = self._run_seen or run is not None
        self._run_finished = self._run_finished or run is None or run.status.is_final

    async def __aexit__(self, *exc: object) -> None:
        for channel in self._channels:
            await self._hub.detach(channel, self._on_message)

    def _on_message(self, channel: str, message: Message | None) -> None:
        if message is None:
            self._behind = True  # notifications may be lost: storage tells the truth
            self._run_unsure = True
            self._failure_unsure = True
        elif channel == self._channels[1]:
            self._run_finished = self._run_finished or message.run.status.is_final
        elif not self._on_chunks(*message.chunks):
            return  # taken live: nothing for `chunks()` to do
        self._woken.set()

    def _on_chunks(self, first: int, epoch: str | None, chunks: list[bytes]) -> bool:
        """Buffers live chunks; False when `live_sink` took them all (no wake-up needed)."""
        if not chunks or (self.epoch is not None and epoch != self.epoch):
            # The stream failed (a message without chunks), or was stored again under another epoch (its
            # storage was lost): storage says where it stops, or that it was reset.
            self._failure_unsure = self._failure_unsure or not chunks
            self._clear_live()
            self._behind = True
        elif not self._behind:
            self.epoch = self.epoch or epoch  # the first chunks this reader sees come live
            if self._parked and not self._live and self.live_sink is not None:
                first, chunks = self._take_live(first, chunks)
                if not chunks:
                    return False
            size = sum(map(len, chunks))
            if len(self._live) + len(chunks) > LIVE_BUFFER_CHUNKS or self._live_bytes + size > LIVE_BUFFER_BYTES:
                self._clear_live()
                self._behind = True  # too slow for the live feed: continue from storage
            else:
                self._live.extend(enumerate(chunks, start=first))
                self._live_bytes += size
        return True

    def _take_live(self, first: int, chunks: list[bytes]) -> tuple[int, list[bytes]]:
        """Hands the chunks from `next_index` on to `live_sink`, in order, until it refuses one; returns those left
        (after a gap, or refused: they go the usual way, buffered or read from storage)."""
        if first > self.next_index:
            return first, chunks
        sink = self.live_sink
        assert sink is not None
        skipped = taken = self.next_index - first  # those before `next_index` were read already
        while taken < len(chunks) and sink(self.next_index, chunks[taken]):
            self.next_index += 1
            taken += 1
        if taken > skipped:
            self._idle_since = asyncio.get_running_loop().time()
        return first + taken, chunks[taken:]

    def _clear_live(self) -> None:
        self._live.clear()
        self._live_bytes = 0

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Every chunk from the start index; ends when the run finished and all were read, or after
        `idle_timeout` seconds without a new chunk (then `timed_out` is true). Raises StreamFailedError
        once every chunk of a failed stream was read, StreamResetError once its storage was lost."""
        loop = asyncio.get_running_loop()
        self.timed_out = False
        self._idle_since = loop.time()
        while True:
            if self._behind:
                self._behind = False  # from now on live chunks are kept; any gap sends us back here
                self._clear_live()
                if self._run_unsure:
                    await self._read_run()
                while True:
                    finished_before_read = self._run_finished
                    # The epoch of what was read so far: a live message handled during the read may teach one
                    # for later chunks, stored after the storage read (then showing none): not a reset.
                    known = self.epoch
                    page = await self._broker.read_chunks(
                        self.run_id, self.key, self.next_index, READ_PAGE_CHUNKS, self._page_bytes
                    )
                    check_position(self.run_id, self.key, page, self.next_index, known)
                    if known is None and page.epoch is not None:
                        if self.epoch not in (None, page.epoch):
                            # learned live, of another storage than this page's: the next read tells which holds
                            self._clear_live()
                            self._behind = True
                        self.epoch = page.epoch
                    for data in page.chunks:
                        yield Chunk(self.next_index, data)
                        self.next_index += 1
                    if page.chunks:
                        self._idle_since = loop.time()  # idle means no new chunk, not a slow consumer
                    # Fewer than asked, and not for lack of room (a page cut by bytes has less than one
                    # largest chunk of room left): storage has nothing more.
                    size = sum(map(len, page.chunks))
                    if len(page.chunks) < READ_PAGE_CHUNKS and size <= self._page_bytes - self._largest_chunk:
                        break
                # A stream is marked failed before its run can finish (its writer marks it, then the task
                # hears of it): read the mark at the start, on its notification, after a resync, and at the end.
                if self._failure is None and (self._failure_unsure or finished_before_read):
                    self._failure_unsure = False
                    self._failure = await self._broker.stream_failure(self.run_id, self.key)
                    if self._failure is not None and self.next_index < self._failure[0]:
                        self._behind = True  # chunks were stored before it failed: read them first
                        continue
                if self._failure is not None:
                    raise stream_failed(self.run_id, self.key, *self._failure)
                if finished_before_read:
                    return  # every chunk was stored before the run finished, and all were read
                continue
            while self._live and not self._behind:
                index, data = self._live.popleft()
                self._live_bytes -= len(data)
                if index < self.next_index:
                    continue  # already read from storage
                if index > self.next_index:
                    self._behind = True  # a gap: fill it from storage
                    break
                yield Chunk(index, data)
                self.next_index += 1
                self._idle_since = loop.time()
            if self._behind or self._live:
                continue
            if self._run_finished:
                self._behind = True  # one last read from storage, then the end
                continue
            self._woken.clear()
            if await self._park(loop):
                self.timed_out = True
                return

    async def _park(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Waits caught up for news (a wake-up); True once idle for the idle timeout. Chunks `live_sink` takes
        meanwhile do not wake it: when its one timer fires, it waits again to the newer deadlines."""
        parked_at = loop.time()
        self._parked = True
        try:
            while True:
                idle_at = None if self._idle_timeout is None else self._idle_since + self._idle_timeout
                check_at = max(parked_at, self._idle_since) + STORAGE_CHECK_SECONDS
                try:
                    # Run changes wake us too, but only chunks reset the idle deadline.
                    async with asyncio.timeout_at(check_at if idle_at is None else min(idle_at, check_at)):
                        await self._woken.wait()
                    return False
                except TimeoutError:
                    now = loop.time()
                    if self._idle_timeout is not None and self._idle_since + self._idle_timeout <= now:
                        return True
                    if max(parked_at, self._idle_since) + STORAGE_CHECK_SECONDS <= now:
                        # A while without news: check that the storage under us is still there.
                        self._behind = True
                        self._run_unsure = True
                        return False
        finally:
            self._parked = False


class OutputStreams:
    """Reading runs' output streams, for the servers, which reach the broker only through the runtime."""

    def __init__(self, hub: Hub, broker: Broker) -> None:
        self._hub = hub
        self._broker = broker

    def reader(
        self,
        run_id: str,
        key: str,
        start_index: int = 0,
        idle_timeout: float | None = None,
        epoch: str | None = None,
    ) -> StreamReader:
        return StreamReader(self._hub, self._broker, run_id, key, start_index, idle_timeout, epoch)

    async def check_resume(self, run_id: str, key: str, start_index: int, epoch: str | None) -> None:
        """StreamResetError when a reader resuming at `start_index` under `epoch` could not go on (`check_position`):
        for a server to refuse it before it answers."""
        page = await self._broker.read_chunks(run_id, key, start_index, 0, 0)
        check_position(run_id, key, page, start_index, epoch)

    async def length(self, run_id: str, key: str) -> int:
        """How many chunks are stored: the index the next one will get."""
        return await self._broker.stream_length(run_id, key)

    async def failure(self, run_id: str, key: str) -> StreamFailedError | None:
        """What a reader of the stream ends with once it failed (its `next_index`: where it stops), else None."""
        failure = await self._broker.stream_failure(run_id, key)
        return None if failure is None else stream_failed(run_id, key, *failure)


class StreamWriter:
    """Appends to one run's stream, batching what queues up while a store is in flight.

    Chunks are stored in order, each once, or the stream fails: a batch that cannot be stored is tried
    again, idempotently at its expected index, with a bounded backoff (WRITE_RETRY_*), while later chunks
    wait behind it (the producer waits once WRITE_QUEUE_CHUNKS are queued). Should it still fail, the
    stream is marked failed in storage (readers end with StreamFailedError), and every pending and later
    append raises StreamFailedError. (When another writer stored other chunks at its index, StreamOrderError
    instead: the stream is whole, this writer alone stops.)"""

    def __init__(
        self,
        streams: StreamStore,
        metrics: Metrics,
        run_id: str,
        key: str,
        max_chunk_bytes: int,
        replayed: int = 0,
        stored: int = 0,
    ) -> None:
        self._streams = streams
        self._metrics = metrics
        self.run_id = run_id
        self.key = check_stream_key(key)
        self._max_chunk_bytes = max_chunk_bytes
        # A resumed run's first `replayed` appends were stored by earlier executions: they get their
        # indexes back without being stored twice (the task's code is deterministic between its steps).
        self._replayed = replayed
        self._appended = 0
        # Where the next batch must be stored: the stream's length before it (`stored`: chunks someone else
        # stored before this writer joined, which it appends after).
        self._next_index = replayed + stored
        self._queue: deque[tuple[bytes, asyncio.Future[int]]] = deque()
        self._room = asyncio.Semaphore(WRITE_QUEUE_CHUNKS)
        self._flusher: asyncio.Task[None] | None = None
        self._failed: Callable[[], BridgeError] | None = None  # what every append raises, once it failed

    def encode(self, value: object) -> bytes:
        try:
            data = orjson.dumps(value)
        except TypeError as exc:
            raise ValidationError(f"a stream chunk must be JSON-serialisable: {exc}") from exc
        if len(data) > self._max_chunk_bytes:
            raise PayloadTooLargeError(f"a chunk is {len(data)} bytes encoded; the limit is {self._max_chunk_bytes}")
        return data

    async def append(self, value: object) -> int:
        """Stores one chunk (any JSON value); returns its index once it is stored."""
        return await (await self.enqueue(value))

    async def enqueue(self, value: object) -> asyncio.Future[int]:
        """Queues one chunk and returns a future of its index, waiting only while the queue is full.
        StreamFailedError once the stream failed."""
        data = self.encode(value)
        stored: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        if self._appended < self._replayed:
            stored.set_result(self._appended)
            self._appended += 1
            return stored
        self._raise_if_failed()
        await self._room.acquire()
        if self._failed is not None:  # failed while we waited for room
            self._room.release()
            self._raise_if_failed()
        self._appended += 1
        self._queue.append((data, stored))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return stored

    def _raise_if_failed(self) -> None:
        if self._failed is not None:
            raise self._failed()

    async def _flush(self) -> None:
        while self._queue:
            batch = [self._queue.popleft()]
            size = len(batch[0][0])
            while (
                self._queue and len(batch) < WRITE_BATCH_CHUNKS and size + len(self._queue[0][0]) <= WRITE_BATCH_BYTES
            ):
                size += len(self._queue[0][0])
                batch.append(self._queue.popleft())
            attributes: Attributes = {
                "bridge.run_id": self.run_id,
                "bridge.stream": self.key,
                "bridge.chunks": len(batch),
            }
            try:
                with span("bridge.stream.append", attributes):
                    first = await self._store([data for data, _ in batch])
            except Exception as exc:  # the stream fails: a later chunk stored now would leave a hole
                await self._give_up(exc, batch)
                return
            finally:
                for _ in batch:
                    self._room.release()
            self._metrics.stream_chunks.inc(len(batch))
            self._metrics.stream_bytes.inc(size)
            self._next_index = first + len(batch)
            for offset, (_, stored) in enumerate(batch):
                if not stored.done():
                    stored.set_result(first + offset)

    async def _store(self, chunks: list[bytes]) -> int:
        """Stores one batch at `_next_index`, retrying while the backend is unavailable (bounded)."""
        return await _retrying(
            lambda: self._streams.append_chunks(self.run_id, self.key, chunks, self._next_index),
            f"storing chunks {self._next_index} to {self._next_index + len(chunks) - 1} of stream {self.key!r} "
            f"of run {self.run_id}",
        )

    async def _give_up(self, cause: Exception, batch: list[tuple[bytes, asyncio.Future[int]]]) -> None:
        reason = f"chunk {self._next_index} could not be stored: {cause}"
        if isinstance(cause, StreamFailedError):
            stopped = cause.next_index
            self._failed = lambda: stream_failed(self.run_id, self.key, stopped, reason)
        elif isinstance(cause, StreamOrderError) and not cause.fewer:
            # Another writer (an older execution of the run that was not fenced off yet) stored other chunks
            # there: the stream is whole, only this writer cannot go on.
            self._failed = lambda: StreamOrderError(str(cause), fewer=False)
        else:
            stopped = self._next_index
            try:  # stored before any appender hears of it: readers see the failure even if this process dies next
                stopped = await self._mark_failed(reason)
            except Exception as exc:
                log.error(
                    "stream %r of run %s failed, and could not be marked failed (%r): its readers are not told",
                    *(self.key, self.run_id, exc),
                )
            self._failed = lambda: stream_failed(self.run_id, self.key, stopped, reason)
        log.warning("stream %r of run %s failed: %s", self.key, self.run_id, reason)
        pending = [*batch, *self._queue]
        self._queue.clear()
        for _ in range(len(pending) - len(batch)):
            self._room.release()
        for _, stored in pending:
            if not stored.done():
                stored.set_exception(self._failed())

    async def _mark_failed(self, reason: str) -> int:
        return await _retrying(
            lambda: self._streams.fail_stream(self.run_id, self.key, reason),
            f"marking stream {self.key!r} of run {self.run_id} failed",
        )

    async def wait_until_flushed(self) -> None:
        """Returns once every queued chunk is stored (or failed, to its appender)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)


async def _retrying(store: Callable[[], Awaitable[T]], what: str) -> T:
    """`store()`, tried again after a backend failure with an exponential backoff: at most
    WRITE_RETRY_ATTEMPTS tries, and none started after WRITE_RETRY_SECONDS. Only for idempotent calls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WRITE_RETRY_SECONDS
    delay = WRITE_RETRY_FIRST_DELAY
    attempt = 1
    while True:
        try:
            return await store()
        except (BackendUnavailableError, ConnectionError, OSError) as exc:
            if attempt >= WRITE_RETRY_ATTEMPTS or loop.time() + delay > deadline:
                raise
            log.info("%s failed (attempt %d, %s); retrying in %.2f s", what, attempt, exc, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, WRITE_RETRY_MAX_DELAY)
        attempt += 1


class RunStreams:
    """The output streams of one executing run: one writer per key, each key listed on the run
    (its `realtimeStreams`) before its first chunk is stored."""

    def __init__(self, engine: RunEngine, run_id: str, resumed: bool = False) -> None:
        self._engine = engine
        self.run_id = run_id
        self._resumed = resumed  # a replayed execution: what earlier executions stored is not stored again
        self._writers: dict[str, StreamWriter] = {}
        self._lock = asyncio.Lock()

    async def writer(self, key: str) -> StreamWriter:
        writer = self._writers.get(key)
        if writer is None:
            async with self._lock:
                writer = self._writers.get(key)
                if writer is None:
                    check_stream_key(key)
                    await self._engine.add_stream_key(self.run_id, key)
                    broker = self._engine.broker
                    stored = await broker.stream_length(self.run_id, key) if self._resumed else 0
                    max_chunk_bytes = self._engine.limits.max_chunk_bytes
                    writer = StreamWriter(broker, self._engine.metrics, self.run_id, key, max_chunk_bytes, stored)
                    self._writers[key] = writer
        return writer

    async def flush(self) -> None:
        """Returns once every chunk appended so far is stored: the run may then finish."""
        for writer in list(self._writers.values()):
            await writer.wait_until_flushed()
