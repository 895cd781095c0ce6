"""`steps`: a task's own side effects, run once per run however often the task is resumed.

@task(id="welcome")
async def welcome(payload: dict) -> dict:
    sent = await steps.run("send-email", send_email, payload["to"])   # sync or async; returns JSON
    await wait.for_(days=1)
    ...

A task's function runs again from the top whenever its run resumes (after a wait that parked it, a
retry, a worker lost). A step whose result is in the run's journal returns that result at once instead
of running again; the first one that is not runs, and its result is recorded. A step that was running
when its worker died runs again: at least once inside a step, exactly once around it (docs/durability.md).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from bridge.errors import ValidationError
from bridge.worker.context import require_run_scope

MAX_STEP_NAME_LENGTH = 256

__all__ = ["run"]


async def run(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Runs `fn(*args, **kwargs)` (awaited if it returns an awaitable) once for the run, recording its result,
    which must be JSON (a resumed run gets it decoded: a tuple comes back as a list). An exception is not
    recorded: it propagates, and a retry runs the step again."""
    scope = require_run_scope("steps.run")
    if not isinstance(name, str) or not 0 < len(name) <= MAX_STEP_NAME_LENGTH:
        raise ValidationError(f"a step's name is a string of 1 to {MAX_STEP_NAME_LENGTH} characters")

    async def live() -> Any:
        result = fn(*args, **kwargs)
        return await result if inspect.isawaitable(result) else result

    return await scope.durable.step("step", name, live)
