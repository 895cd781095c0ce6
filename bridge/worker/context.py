"""The run a task's code is executing: what `metadata.*`, `streams.*` and `wait.*` use when called without a run id."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bridge.worker.registry import RunContext

if TYPE_CHECKING:
    from bridge.runtime.core import Bridge
    from bridge.runtime.input_streams import RunInputs
    from bridge.runtime.output_streams import RunStreams
    from bridge.worker.durable import DurableRun


@dataclass(frozen=True)
class RunScope:
    """Everything the SDK needs from the run executing in this task."""

    context: RunContext
    streams: RunStreams
    inputs: RunInputs
    durable: DurableRun  # its durable steps: replayed from the journal, or run live and recorded
    bridge: Bridge  # the bridge executing it: every SDK call the task makes goes there, whatever `configure` says


_current_scope: ContextVar[RunScope | None] = ContextVar("current_run_scope", default=None)


@contextmanager
def entered(scope: RunScope) -> Iterator[RunScope]:
    """Makes `scope` the current one for the code run inside the `with` (and the tasks it starts)."""
    token = _current_scope.set(scope)
    try:
        yield scope
    finally:
        _current_scope.reset(token)


def current_run_scope() -> RunScope | None:
    """The executing run's scope, or None outside a task."""
    return _current_scope.get()


def require_run_scope(what: str) -> RunScope:
    scope = _current_scope.get()
    if scope is None:
        raise RuntimeError(f"{what} can only be called from inside a running task")
    return scope
