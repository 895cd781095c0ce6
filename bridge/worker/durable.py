"""Durable steps of one execution: replayed from the run's journal, or run live and recorded.

A wait first holds its run in the worker (WAITING, its slot given to other runs) for
`settings.wait_hold_seconds`: a quick completion resumes it in place. Past that, or at once when the
worker is stopping, the run parks: it records what it waits for, leaves the worker (no coroutine, no
slot, no memory) and is queued again once that is done, to be resumed on any worker by replay.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from typing import Any, NoReturn

from bridge.errors import NotFoundError
from bridge.models import now_ms
from bridge.runtime.core import Bridge
from bridge.runtime.input_streams import InputChannel, InputStreamTimeoutError, input_key
from bridge.runtime.journal import HandedBack, Journal, Parked

Suspend = Callable[[], AbstractAsyncContextManager[None]]


class DurableRun:
    def __init__(self, bridge: Bridge, run_id: str, journal: Journal, suspend: Suspend, release: asyncio.Event) -> None:
        self._bridge = bridge
        self.run_id = run_id
        self.journal = journal
        self._suspend = suspend
        self._release = release  # set when the worker stops: waits park and new steps hand the run back
        self._metadata_changes = 0
        self._looked_once = False  # a resumed execution looked whether its first live wait is done

    @property
    def execution(self) -> int:
        return self.journal.execution

    def next_metadata_sequence(self) -> int:
        sequence = self._metadata_changes
        self._metadata_changes += 1
        return sequence

    async def step(self, kind: str, name: str, live: Callable[[], Awaitable[Any]]) -> Any:
        """The recorded result of this step, or `live()`'s, recorded."""
        entry = self.journal.replay(kind, name)
        if entry is not None:
            return entry.result
        if self._release.is_set():
            await self.hand_back()
        return await self.journal.record(kind, name, await live())

    async def hand_back(self) -> NoReturn:
        await self._bridge.engine.hand_back(self.run_id, self.execution)
        raise HandedBack()

    async def wait_for_token(self, token_id: str) -> dict[str, Any]:
        """`{"status": "COMPLETED" | "TIMED_OUT", "output": ...}` once the token is done."""
        entry = self.journal.replay("wait.for_token", token_id)
        if entry is not None:
            return dict(entry.result)
        if self.execution > 1 and not self._looked_once:
            # A resumed execution reaches the wait it parked on, done by now (its completion queued the
            # run): take the result without suspending, which would give the slot up and store the run
            # WAITING then EXECUTING again (4 round trips, 2 run updates published, a slot to queue for).
            self._looked_once = True
            current = await self._bridge.waitpoints.retrieve(token_id)
            if current.is_done:
                return dict(await self.journal.record("wait.for_token", token_id, current.result_dict()))
        async with self._suspend():
            token = await self._bridge.waitpoints.wait_done(token_id, self._hold_seconds(), self._release)
            if token is None:
                await self._park(token_id)
        return dict(await self.journal.record("wait.for_token", token_id, token.result_dict()))

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
        try:
            deadline = (await self._bridge.waitpoints.retrieve(token_id)).timeout_at
        except NotFoundError:  # expired with the retention: nothing will come any more
            deadline = now_ms()
        async with self._suspend():
            remaining = max(0.0, (deadline - now_ms()) / 1000)
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
