"""Task definitions and the registry a worker runs them from (the SDK's `@task` adds to the default one)."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self, TypeVar

from bridge.backends.base import QueueSpec
from bridge.runtime.max_duration import check_max_duration
from bridge.runtime.queues import task_queue_spec

TaskFunction = Callable[..., Awaitable[Any]]
DefinitionT = TypeVar("DefinitionT", bound="TaskDefinition")


@dataclass(frozen=True)
class RunContext:
    """What a task may want to know about its own run (the optional second argument)."""

    run_id: str
    task_id: str
    tags: tuple[str, ...]
    batch_id: str | None
    parent_task_run_id: str | None = None  # set in a child run (`trigger_and_wait`), as the official `ctx.run`
    root_task_run_id: str | None = None


@dataclass(frozen=True)
class TaskDefinition:
    id: str
    function: TaskFunction
    wants_context: bool
    retry: dict[str, Any] | None = None  # the task's retry policy (`RetryPolicy.from_spec`); None: the worker's
    queue: QueueSpec | None = None  # the task's queue and concurrency limit (bridge/runtime/queues.py)
    max_duration: float | None = None  # seconds of compute time (bridge/runtime/max_duration.py)

    @classmethod
    def of(
        cls,
        task_id: str,
        function: TaskFunction,
        retry: dict[str, Any] | None = None,
        queue: QueueSpec | None = None,
        max_duration: float | None = None,
    ) -> Self:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"task {task_id!r} must be an `async def` function")
        parameters = inspect.signature(function).parameters
        seconds = check_max_duration(max_duration, "max_duration")
        return cls(task_id, function, len(parameters) >= 2, retry, queue, seconds)

    async def __call__(self, payload: Any, context: RunContext) -> Any:
        if self.wants_context:
            return await self.function(payload, context)
        return await self.function(payload)


class TaskRegistry:
    def __init__(self) -> None:
        self._tasks: dict[str, TaskDefinition] = {}

    def add(
        self,
        task_id: str,
        function: TaskFunction,
        retry: dict[str, Any] | None = None,
        queue: str | dict[str, Any] | None = None,
        max_duration: float | None = None,
    ) -> TaskDefinition:
        """`retry`, `queue` and `max_duration` as `@task` takes them."""
        spec = task_queue_spec(task_id, queue)
        return self.register(TaskDefinition.of(task_id, function, retry, spec, max_duration))

    def register(self, definition: DefinitionT) -> DefinitionT:
        existing = self._tasks.get(definition.id)
        if existing and existing.function is not definition.function:
            raise ValueError(f"two different functions are registered as task {definition.id!r}")
        self._tasks[definition.id] = definition
        return definition

    def add_task(
        self,
        task_id: str,
        retry: dict[str, Any] | None = None,
        queue: str | dict[str, Any] | None = None,
        max_duration: float | None = None,
    ) -> Callable[[TaskFunction], TaskDefinition]:
        """Decorator form of `add`, for registries other than the default one."""
        spec = task_queue_spec(task_id, queue)  # refused here, not at the first trigger
        return lambda function: self.register(TaskDefinition.of(task_id, function, retry, spec, max_duration))

    def get(self, task_id: str) -> TaskDefinition | None:
        return self._tasks.get(task_id)

    @property
    def ids(self) -> list[str]:
        return sorted(self._tasks)

    @property
    def queues(self) -> dict[str, QueueSpec | None]:
        """Each task's declared queue (None: none)."""
        return {task_id: definition.queue for task_id, definition in self._tasks.items()}


default_registry = TaskRegistry()


def load_tasks(spec: str) -> None:
    """Imports a module (`pkg.tasks`) or a file (`./tasks.py`) so its `@task` functions register."""
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        module_name = f"bridge_tasks_{path.stem}"
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ImportError(f"cannot load tasks from {spec}")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        module_spec.loader.exec_module(module)
    else:
        importlib.import_module(spec)
