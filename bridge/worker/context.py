"""The run a task's code is executing, for `metadata.*` and friends called without a run id."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from bridge.worker.registry import RunContext

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from bridge.inputs import RunInputs
    from bridge.streams import RunStreams

current_run: ContextVar[RunContext | None] = ContextVar("current_run", default=None)
current_streams: ContextVar[RunStreams | None] = ContextVar("current_streams", default=None)
current_inputs: ContextVar[RunInputs | None] = ContextVar("current_inputs", default=None)
# Frees the run's worker slot (the run shows WAITING) for the duration of an `async with`.
current_suspend: ContextVar[Callable[[], AbstractAsyncContextManager[None]] | None] = ContextVar(
    "current_suspend", default=None
)


def require_current_run(what: str) -> RunContext:
    context = current_run.get()
    if context is None:
        raise RuntimeError(f"{what} can only be called from inside a running task")
    return context


def require_run_streams(what: str) -> RunStreams:
    streams = current_streams.get()
    if streams is None:
        raise RuntimeError(f"{what} can only be called from inside a running task")
    return streams


def require_run_inputs(what: str) -> RunInputs:
    inputs = current_inputs.get()
    if inputs is None:
        raise RuntimeError(f"{what} can only be called from inside a running task")
    return inputs


def require_suspend(what: str) -> Callable[[], AbstractAsyncContextManager[None]]:
    suspend = current_suspend.get()
    if suspend is None:
        raise RuntimeError(f"{what} can only be called from inside a running task")
    return suspend
