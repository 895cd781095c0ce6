"""`hold_at("step-name")`: a run that reaches `steps.run("step-name", ...)` pauses there until the test
releases it (the step then runs) or fails it (the step raises `AbortTaskRunError`: the run ends FAILED).

The hold sits inside the step's live run, so a replay of a recorded step never stops at it, and the run
shows EXECUTING while it is held, as it would while a slow step runs. Task code calls `steps.run(...)`
through the module (`from bridge import steps`), which is what the fixture patches for one test.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from bridge.errors import AbortTaskRunError
from bridge.worker.context import require_run_scope

StepRunner = Callable[..., Awaitable[Any]]


class Hold:
    """One held step: which runs reached it, and what happens to them next."""

    def __init__(self, step: str) -> None:
        self.step = step
        self.run_ids: list[str] = []  # in the order they reached it
        self._arrived = asyncio.Event()
        self._released = asyncio.Event()
        self._error: BaseException | None = None

    async def reached(self, timeout: float = 5.0) -> str:
        """The id of the first run that reached the step, once one did."""
        try:
            async with asyncio.timeout(timeout):
                await self._arrived.wait()
        except TimeoutError:
            raise AssertionError(f"no run reached the step {self.step!r} within {timeout:g} s") from None
        return self.run_ids[0]

    def release(self) -> None:
        """Lets every held run (and any that reaches the step later) run the step."""
        self._released.set()

    def fail(self, message: str = "failed by the test") -> None:
        """Makes the step raise `AbortTaskRunError(message)` in every held run: they end FAILED, not retried."""
        self._error = AbortTaskRunError(message)
        self._released.set()

    async def _pass(self, run_id: str) -> None:
        self.run_ids.append(run_id)
        self._arrived.set()
        await self._released.wait()
        if self._error is not None:
            raise self._error


class Holds:
    """The holds of one test, and `steps.run` with them in place."""

    def __init__(self) -> None:
        self._by_step: dict[str, Hold] = {}

    def hold_at(self, step: str) -> Hold:
        return self._by_step.setdefault(step, Hold(step))

    def wrap(self, run: StepRunner) -> StepRunner:
        """`steps.run`, pausing the live run of a held step first."""

        async def held_run(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            hold = self._by_step.get(name)
            if hold is None:
                return await run(name, fn, *args, **kwargs)
            run_id = require_run_scope("steps.run").context.run_id

            async def live(*live_args: Any, **live_kwargs: Any) -> Any:
                await hold._pass(run_id)
                result = fn(*live_args, **live_kwargs)
                return await result if inspect.isawaitable(result) else result

            return await run(name, live, *args, **kwargs)

        return held_run
