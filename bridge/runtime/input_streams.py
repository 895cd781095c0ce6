"""Input streams: values sent into a running task (a Stop button, an approval, a chat reply).

A value is stored before `send` returns (in the run's input stream, numbered like output chunks),
then dispatched inside the task by its `InputChannel`, with the official semantics:

- a value goes to the oldest `once`/`wait` waiter (and to every `on` handler), else to the `on`
  handlers, else into the buffer;
- `on` drains the buffer into the new handler; `once` takes from the buffer first;
- `peek` returns the oldest buffered value without consuming it.

Values are delivered in the order they were stored, each once, to the run's single execution.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from bridge.aio import cancel_and_wait
from bridge.backends.base import Broker
from bridge.errors import BridgeError, ValidationError
from bridge.runtime.engine import MAX_IDEMPOTENCY_KEY_LENGTH, RunEngine
from bridge.runtime.hub import Hub
from bridge.runtime.output_streams import MAX_STREAM_KEY_LENGTH, StreamReader
from bridge.tracing import Attributes, span

log = logging.getLogger(__name__)

DRAIN_SECONDS = 2.0  # at most this long after the run ended, values accepted before are still dispatched
INPUT_KEY_PREFIX = "$in:"  # output stream keys cannot start with "$", so the names never collide
Handler = Callable[[Any], Awaitable[None] | None]


class InputStreamTimeoutError(BridgeError):
    code = "input_stream_timeout"
    status = 408


def input_key(stream_id: str) -> str:
    if (
        not isinstance(stream_id, str)
        or not stream_id
        or len(stream_id) > MAX_STREAM_KEY_LENGTH
        or not stream_id.isprintable()
    ):
        raise ValidationError(f"an input stream id is 1 to {MAX_STREAM_KEY_LENGTH} printable characters")
    return INPUT_KEY_PREFIX + stream_id


class Subscription:
    """What `on` returns: call `off()` (in a `finally`) to stop receiving."""

    def __init__(self, channel: InputChannel, handler: Handler) -> None:
        self._channel = channel
        self._handler = handler

    def off(self) -> None:
        self._channel.remove_handler(self._handler)


class InputChannel:
    """One input stream of one executing run, following the stored values from the first one."""

    def __init__(self, hub: Hub, broker: Broker, run_id: str, stream_id: str) -> None:
        self.stream_id = stream_id
        self._reader = StreamReader(hub, broker, run_id, input_key(stream_id))
        self._buffer: deque[Any] = deque()
        self._waiters: deque[asyncio.Future[Any]] = deque()
        self._handlers: list[Handler] = []
        self._handler_tasks: set[asyncio.Task[None]] = set()
        self.received = 0  # values read from the stream so far: the next one's index
        # Started at once, in the background: values stored before it attaches are read from storage.
        self._pump = asyncio.create_task(self._follow())

    async def close(self, drain_seconds: float = 0) -> None:
        """Stops following. With `drain_seconds`, first lets the reader run to its natural end (the run is
        final and every stored value was read), so `on` handlers still attached see every value that was
        accepted before the run finished."""
        if drain_seconds > 0 and not self._pump.done():
            await asyncio.wait({self._pump}, timeout=drain_seconds)
        await cancel_and_wait(self._pump)
        for waiter in self._waiters:
            waiter.cancel()

    async def _follow(self) -> None:
        async with self._reader:
            async for chunk in self._reader.chunks():
                self._dispatch(orjson.loads(chunk.data))

    def _dispatch(self, value: Any) -> None:
        self.received += 1
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()  # timed out or cancelled
        if self._waiters:
            self._waiters.popleft().set_result(value)
            self._call_handlers(value)
        elif self._handlers:
            self._call_handlers(value)
        else:
            self._buffer.append(value)

    def _call_handlers(self, value: Any) -> None:
        for handler in list(self._handlers):
            try:
                result = handler(value)
            except Exception:
                log.exception("input stream %s: an `on` handler failed", self.stream_id)
                continue
            if asyncio.iscoroutine(result):
                task = asyncio.ensure_future(result)
                self._handler_tasks.add(task)
                task.add_done_callback(self._handler_tasks.discard)

    def on(self, handler: Handler) -> Subscription:
        self._handlers.append(handler)
        while self._buffer:
            self._call_handlers(self._buffer.popleft())
        return Subscription(self, handler)

    def remove_handler(self, handler: Handler) -> None:
        with contextlib.suppress(ValueError):
            self._handlers.remove(handler)

    def peek(self) -> Any:
        return self._buffer[0] if self._buffer else None

    async def once(self, timeout: float | None) -> Any:
        if self._buffer:
            return self._buffer.popleft()
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError as exc:
            raise InputStreamTimeoutError(
                f"no value arrived on input stream {self.stream_id!r} within {timeout:g} s"
            ) from exc
        finally:
            if not waiter.done():
                waiter.cancel()


class RunInputs:
    """The input streams of one executing run, each followed from its first use until the run ends."""

    def __init__(self, hub: Hub, broker: Broker, run_id: str) -> None:
        self._hub = hub
        self._broker = broker
        self.run_id = run_id
        self._channels: dict[str, InputChannel] = {}

    def channel(self, stream_id: str) -> InputChannel:
        channel = self._channels.get(stream_id)
        if channel is None:
            channel = self._channels[stream_id] = InputChannel(self._hub, self._broker, self.run_id, stream_id)
        return channel

    async def close(self, drain_seconds: float = 0) -> None:
        """See `InputChannel.close`: the executor drains once the run's final status is stored."""
        await asyncio.gather(*(channel.close(drain_seconds) for channel in self._channels.values()))


def check_idempotency_key(idempotency_key: str | None) -> None:
    if idempotency_key is not None and (
        not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY_LENGTH
    ):
        raise ValidationError(f"an input idempotency key is a string of 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters")


async def send_input(
    engine: RunEngine, run_id: str, stream_id: str, value: Any, idempotency_key: str | None = None
) -> int:
    """Stores `value` on the run's input stream; returns its index once stored (acknowledged).

    With an `idempotency_key`, a send retried with the same key (same run and stream, within the run's
    retention) stores nothing and returns the index of the value the first one stored, whatever its
    value: a send cut off between storing and answering can be retried and is delivered once."""
    key = input_key(stream_id)
    check_idempotency_key(idempotency_key)
    engine.check_size("an input value", value)
    started = time.time_ns()
    index = await engine.broker.append_input(run_id, key, orjson.dumps(value), idempotency_key)
    # A run parked in this stream's `wait()` resumes; one about to park looks at the stream once parked.
    # Also after a repeated key: the first send may have stored the value and stopped before resuming.
    run = await engine.broker.get_run(run_id)
    # Traced in the run's trace, whose context this read brings: the span starts back when the send did.
    parent = run.trace_context if run is not None else None
    attributes: Attributes = {"bridge.run_id": run_id, "bridge.input_stream": stream_id, "bridge.index": index}
    with span("bridge.input.send", attributes, parent, started):
        if run is not None and run.waiting_input == stream_id and run.waiting_on is not None:
            await engine.resume(run_id, run.waiting_on)
    return index
