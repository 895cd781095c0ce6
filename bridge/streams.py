"""`streams`: named output streams a task writes and anyone with access reads live.

ai = streams.define("ai")
await ai.append("Hello")                      # inside a task: one chunk, any JSON value
async for token in ai.pipe(tokens()): ...     # forward an async iterable, seeing each item too
async for chunk in ai.read(run_id): ...       # anywhere: every chunk, once, in order
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from bridge.client import state as client
from bridge.durations import parse_duration_seconds
from bridge.runtime.input_streams import Handler, InputChannel, InputStreamTimeoutError, Subscription, input_key
from bridge.runtime.output_streams import check_start_index, check_stream_key
from bridge.worker.context import require_run_scope

DEFAULT_KEY = "default"
__all__ = [
    "InputStream",
    "InputStreamTimeoutError",
    "OutputStream",
    "PipedStream",
    "append",
    "define",
    "input",
    "pipe",
    "read",
]


class PipedStream:
    """What `pipe` returns: iterate it to see each item as it is forwarded, or just await completion.

    Pulling drives the source, so nothing is buffered without bound when nobody iterates locally.
    """

    def __init__(self, stream: OutputStream, source: AsyncIterable[Any]) -> None:
        self._stream = stream
        self._source = source
        self._started = False
        self._pending: list[Any] = []

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._forward()

    async def _forward(self) -> AsyncIterator[Any]:
        if self._started:
            raise RuntimeError("a piped stream can be consumed once")
        self._started = True
        scope = require_run_scope("streams.pipe")
        scope.durable.check_outside_step("streams.pipe")
        writer = await scope.streams.writer(self._stream.key)
        async for item in self._source:
            stored = await writer.enqueue(item)  # StreamFailedError once the stream failed
            # One failure fails every later chunk too: the first one awaited (or `enqueue`) raises it,
            # and the others' are taken here, not warned about as never retrieved.
            stored.add_done_callback(_take_exception)
            self._pending.append(stored)
            yield item

    async def wait_until_complete(self) -> None:
        """Consumes what is left of the source, and returns once every chunk is stored."""
        if not self._started:
            async for _ in self:
                pass
        for stored in self._pending:
            await stored  # raises if a chunk could not be stored
        self._pending.clear()


def _take_exception(stored: asyncio.Future[int]) -> None:
    if not stored.cancelled():
        stored.exception()


class OutputStream:
    def __init__(self, key: str = DEFAULT_KEY) -> None:
        self.key = check_stream_key(key)

    async def append(self, value: Any) -> int:
        """Stores one chunk for the current run; returns its index."""
        scope = require_run_scope(f"{self.key}.append")
        scope.durable.check_outside_step(f"{self.key}.append")
        writer = await scope.streams.writer(self.key)
        return await writer.append(value)

    def pipe(self, source: AsyncIterable[Any]) -> PipedStream:
        return PipedStream(self, source)

    async def read(
        self, run_id: str, *, start_index: int = 0, timeout_in_seconds: float | None = 60
    ) -> AsyncIterator[Any]:
        """Every chunk of `run_id`'s stream from `start_index`; ends when the run finished and all
        were read, or after `timeout_in_seconds` without a new chunk. Raises StreamFailedError (from
        bridge.errors) once every chunk of a stream that failed was read, and StreamResetError when the
        stream's storage was lost or replaced while it read (or before: `start_index` past what is stored),
        so what it yielded may differ from what the stream now holds."""
        start = check_start_index(start_index, "start_index")
        transport = await client.current()
        async with contextlib.aclosing(transport.read(run_id, self.key, start, timeout_in_seconds)) as chunks:
            async for chunk in chunks:
                yield chunk


def define(key: str = DEFAULT_KEY) -> OutputStream:
    return OutputStream(key)


async def append(key: str, value: Any) -> int:
    return await OutputStream(key).append(value)


def pipe(key: str, source: AsyncIterable[Any]) -> PipedStream:
    return OutputStream(key).pipe(source)


def read(
    run_id: str, key: str = DEFAULT_KEY, *, start_index: int = 0, timeout_in_seconds: float | None = 60
) -> AsyncIterator[Any]:
    return OutputStream(key).read(run_id, start_index=start_index, timeout_in_seconds=timeout_in_seconds)


class InputStream:
    """A named input stream: values sent into a running task.

    approval = streams.input("approval")
    data = await approval.wait(timeout="5m")   # in the task: WAITING, worker slot freed meanwhile
    data = await approval.once(timeout=30)     # in the task: stays EXECUTING
    sub = approval.on(handler)                 # in the task: every value; sub.off() when done
    latest = approval.peek()                   # in the task: oldest buffered value, not consumed
    await approval.send(run_id, {"ok": True})  # anywhere: returns once the value is stored
    await approval.send(run_id, {"ok": True}, idempotency_key=key)  # a retry with `key` stores nothing
    """

    def __init__(self, stream_id: str) -> None:
        input_key(stream_id)  # validates
        self.id = stream_id

    async def send(self, run_id: str, data: Any, *, idempotency_key: str | None = None) -> None:
        """Refused with NotFoundError for an unknown run, RunFinishedError for a finished one,
        PayloadTooLargeError over 1 MiB, ValidationError for an idempotency key over 2,048 characters.

        With `idempotency_key` (e.g. a UUID made once per value), sending again with the same key (to
        the same run and stream) stores nothing: a send retried after an error is delivered once."""
        await (await client.current()).send_input(run_id, self.id, data, idempotency_key)

    def _channel(self, what: str) -> InputChannel:
        return require_run_scope(f"{self.id}.{what}").inputs.channel(self.id)

    async def once(self, *, timeout: Duration | None = None) -> Any:
        """The next value (buffered ones first); InputStreamTimeoutError after `timeout`."""
        return await self._channel("once").once(_seconds(timeout))

    async def wait(self, *, timeout: Duration | None = None) -> Any:
        """Like `once`, but the run shows WAITING meanwhile and holds no worker: a wait longer than a moment
        parks the run until a value arrives (or the timeout), and any worker resumes it (docs/durability.md)."""
        scope = require_run_scope(f"{self.id}.wait")
        return await scope.durable.wait_for_input(scope.inputs.channel(self.id), _seconds(timeout))

    def on(self, handler: Handler) -> Subscription:
        """Calls `handler` (sync or async) with every value, buffered ones first."""
        return self._channel("on").on(handler)

    def peek(self) -> Any:
        return self._channel("peek").peek()


Duration = str | int | float


def _seconds(timeout: Duration | None) -> float | None:
    return None if timeout is None else parse_duration_seconds(timeout)


def input(stream_id: str) -> InputStream:  # noqa: A001 - the official name
    return InputStream(stream_id)
