"""Durable steps of one execution: replayed from the run's journal, or run live and recorded.

A wait first holds its run in the worker (WAITING, its slot given to other runs) for
`settings.wait_hold_seconds`: a quick completion resumes it in place. Past that, or at once when the
worker is stopping, the run parks: it records what it waits for, leaves the worker (no coroutine, no
slot, no memory) and is queued again once that is done, to be resumed on any worker by replay.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, NoReturn

from bridge.errors import NotFoundError, ValidationError
from bridge.models import Run
from bridge.runtime.children import ChildItem, Parent
from bridge.runtime.core import Bridge
from bridge.runtime.input_streams import InputChannel, InputStreamTimeoutError, input_key
from bridge.runtime.journal import HandedBack, Journal, Parked
from bridge.runtime.output_streams import RunStreams

Suspend = Callable[[], AbstractAsyncContextManager[None]]


class DurableRun:
    def __init__(
        self,
        bridge: Bridge,
        run: Run,
        journal: Journal,
        streams: RunStreams,
        suspend: Suspend,
        release: asyncio.Event,
    ) -> None:
        self._bridge = bridge
        self.run_id = run.id
        self._parent = Parent(run.id, run.root_task_run_id or run.id, run.depth)  # what its children carry
        self.journal = journal
        # Flushed before the run leaves this worker: the execution resuming it counts what is stored.
        self._streams = streams
        self._suspend = suspend
        self._release = release  # set when the worker stops: waits park and new steps hand the run back
        self._metadata_changes = 0
        # Metadata changes earlier executions applied: replayed, they are skipped. Counted when this one
        # started, so concurrent changes of this execution are all applied whatever order they land in.
        self._metadata_applied = run.metadata_ops
        self._in_step = False
        self._live_step: str | None = None  # the `steps.run` whose function is running now

    @property
    def execution(self) -> int:
        return self.journal.execution

    def next_metadata_change(self) -> int | None:
        """The sequence number of the task's next metadata change, or None when an earlier execution applied it."""
        sequence = self._metadata_changes
        self._metadata_changes += 1
        return None if sequence < self._metadata_applied else sequence

    @contextlib.contextmanager
    def _one_step(self, kind: str, name: str) -> Iterator[None]:
        # The journal is a sequence: steps run concurrently (asyncio.gather) would record in an order a
        # replay cannot reproduce, so they are refused rather than replayed wrongly.
        if self._in_step:
            raise ValidationError(
                f"{kind} {name!r}: a run's durable steps run one at a time, not concurrently or nested"
            )
        self._in_step = True
        try:
            yield
        finally:
            self._in_step = False

    async def step(self, kind: str, name: str, live: Callable[[], Awaitable[Any]]) -> Any:
        """The recorded result of this step, or `live()`'s, recorded."""
        with self._one_step(kind, name):
            entry = self.journal.replay(kind, name)
            if entry is not None:
                return entry.result
            if self._release.is_set():
                await self.hand_back()
            self._live_step = name
            try:
                result = await live()
            finally:
                self._live_step = None
            return await self.journal.record(kind, name, result)

    @property
    def in_live_step(self) -> bool:
        return self._live_step is not None

    def check_outside_step(self, what: str) -> None:
        """Stream appends are counted from the top of the task so a replay skips those already stored;
        inside a step, which a replay does not run, they would shift that count."""
        if self._live_step is not None:
            raise ValidationError(f"{what} inside the step {self._live_step!r}: make it before or after the step")

    async def hand_back(self) -> NoReturn:
        await self._streams.flush()
        await self._bridge.engine.hand_back(self.run_id, self.execution)
        raise HandedBack()

    async def wait_for_token(self, token_id: str) -> dict[str, Any]:
        """`{"status": "COMPLETED" | "TIMED_OUT", "output": ...}` once the token is done."""
        with self._one_step("wait.for_token", token_id):
            entry = self.journal.replay("wait.for_token", token_id)
            if entry is not None:
                return dict(entry.result)
            token = await self._bridge.waitpoints.wait_done(
                token_id, self._hold_seconds(), self._release, self._suspend, lambda: self._park(token_id)
            )
            return dict(await self.journal.record("wait.for_token", token_id, token.result_dict()))

    async def trigger_and_wait(
        self, kind: str, name: str, items: list[ChildItem], batch: bool
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Child runs: their trigger is a step keyed by its position (a replay gets the same runs, never new
        ones), then a wait for the token their ends complete. Returns both steps' records."""
        position = self.journal.position

        async def start() -> dict[str, Any]:
            return await self._bridge.children.start(self._parent, position, items, batch)

        started = await self.step(kind, name, start)
        return started, await self.wait_for_token(started["token"])

    async def sleep_until(self, kind: str, deadline_ms: int) -> None:
        """`wait.for_` / `wait.until`: a wait token of the run's own that times out at the deadline."""

        async def create() -> dict[str, Any]:
            token, _ = await self._bridge.waitpoints.create(timeout=datetime.fromtimestamp(deadline_ms / 1000, UTC))
            return {"token": token.id}

        created = await self.step(kind, "", create)
        await self.wait_for_token(created["token"])

    async def wait_for_input(self, channel: InputChannel, timeout: float | None) -> Any:
        """An input stream's `wait()`: its next value. The deadline is recorded (a wait token of the run's
        own), so a resumed run keeps the first deadline; the values are read again from the stream's first
        one on every execution, so a replay consumes them in the same order."""

        async def create() -> dict[str, Any]:
            token, _ = await self._bridge.waitpoints.create(timeout=timeout)
            return {"token": token.id}

        token_id = (await self.step("input.wait", channel.stream_id, create))["token"]
        with self._one_step("input.wait", channel.stream_id):
            return await self._receive(channel, token_id)

    async def _receive(self, channel: InputChannel, token_id: str) -> Any:
        try:
            deadline = (await self._bridge.waitpoints.retrieve(token_id)).timeout_at
        except NotFoundError:  # expired with the retention: nothing will come any more
            deadline = self._bridge.clock.now_ms()
        async with self._suspend():
            remaining = max(0.0, (deadline - self._bridge.clock.now_ms()) / 1000)
            hold = self._hold_seconds()
            receiving = asyncio.ensure_future(channel.once(min(remaining, hold)))
            released = asyncio.ensure_future(self._release.wait())
            try:
                await asyncio.wait([receiving, released], return_when=asyncio.FIRST_COMPLETED)
            finally:
                released.cancel()
            held_only = remaining > hold  # a timeout then ends the hold, not the wait
            if receiving.done() and not (held_only and isinstance(receiving.exception(), InputStreamTimeoutError)):
                return receiving.result()  # the value, or the wait's own timeout
            receiving.cancel()
            await asyncio.gather(receiving, return_exceptions=True)
            await self._park(token_id, channel)

    async def retry_after(self, delay: float) -> NoReturn:
        """Parks the run (it stays EXECUTING) until a wait token of its own times out after `delay`."""
        token, _ = await self._bridge.waitpoints.create(timeout=delay)
        await self._park(token.id)

    def _hold_seconds(self) -> float:
        return 0.0 if self._release.is_set() else self._bridge.settings.wait_hold_seconds

    async def _park(self, token_id: str, channel: InputChannel | None = None) -> NoReturn:
        """Records what the run waits for and leaves the worker. What completes the wait before the run is
        recorded as parked would find nothing to resume: so look again once it is recorded."""
        engine = self._bridge.engine
        await self._streams.flush()
        await engine.park(self.run_id, self.execution, token_id, channel.stream_id if channel else None)
        if channel is not None:
            stored = await engine.broker.stream_length(self.run_id, input_key(channel.stream_id))
            if stored > channel.received:
                await engine.resume(self.run_id, token_id)
        else:
            try:
                done = (await self._bridge.waitpoints.retrieve(token_id)).is_done
            except NotFoundError:
                done = True
            if done:
                await engine.resume(self.run_id, token_id)
        raise Parked()
