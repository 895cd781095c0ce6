"""The run a task's code is executing, for `metadata.*` and friends called without a run id."""

from __future__ import annotations

from contextvars import ContextVar

from bridge.worker.registry import RunContext

current_run: ContextVar[RunContext | None] = ContextVar("current_run", default=None)


def require_current_run(what: str) -> RunContext:
    context = current_run.get()
    if context is None:
        raise RuntimeError(f"{what} can only be called from inside a running task")
    return context
