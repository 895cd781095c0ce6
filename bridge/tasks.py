"""`@task`, `tasks.trigger` and `tasks.batch_trigger`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bridge.client import state as client
from bridge.client.results import BatchHandle, RunHandle
from bridge.config import Limits
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.retries import RetryPolicy
from bridge.worker.registry import TaskDefinition, TaskFunction, TaskRegistry, default_registry


class Task(TaskDefinition):
    """What `@task` returns: the registered function, plus `trigger` for this task."""

    async def trigger(self, payload: Any = None, **options: Any) -> RunHandle:
        """`await my_task.trigger(payload, tags=[...])`: shorthand for `tasks.trigger(my_task.id, ...)`."""
        return await trigger(self.id, payload, **options)


def task(
    id: str,  # noqa: A002 - the official name
    *,
    retry: dict[str, Any] | None = None,
    registry: TaskRegistry | None = None,
) -> Callable[[TaskFunction], Task]:
    """Registers an `async def fn(payload[, ctx])` as a task: `@task(id="draft-email")`.

    `retry`, as the official option: `{"max_attempts": 3, "factor": 2, "min_timeout": "1s", "max_timeout":
    "10s", "randomize": True}` (what is missing keeps its default; `max_attempts` defaults to the worker's
    `BRIDGE_MAX_ATTEMPTS`). A failed attempt is retried after its backoff, replaying what it recorded
    (docs/durability.md); `AbortTaskRunError` fails the run at once."""
    RetryPolicy.from_spec(retry, 1, Limits().max_attempts)  # refused here, not at the first failure
    return lambda function: (registry or default_registry).register(Task.of(id, function, retry))


async def trigger(
    task_id: str,
    payload: Any = None,
    *,
    tags: list[str] | str | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: str | int | None = None,
    metadata: dict[str, Any] | None = None,
    max_attempts: int | None = None,
) -> RunHandle:
    """Queues a run of `task_id`. `max_attempts` overrides the task's retry policy for this run."""
    options = TriggerOptions(
        tags=[tags] if isinstance(tags, str) else list(tags or []),
        idempotency_key=idempotency_key,
        idempotency_key_ttl=idempotency_key_ttl,
        metadata=metadata,
        max_attempts=max_attempts,
    )
    return await (await client.current()).trigger(task_id, payload, options)


async def batch_trigger(task_id: str, items: list[dict[str, Any]]) -> BatchHandle:
    """`items` like the official SDK: `[{"payload": ..., "options": {"tags": [...], ...}}, ...]`."""
    prepared = []
    for item in items:
        options = item.get("options") or {}
        prepared.append(
            (
                item.get("payload"),
                TriggerOptions(
                    tags=list(options.get("tags") or []),
                    idempotency_key=options.get("idempotency_key"),
                    idempotency_key_ttl=options.get("idempotency_key_ttl"),
                    metadata=options.get("metadata"),
                    max_attempts=options.get("max_attempts"),
                ),
            )
        )
    return await (await client.current()).batch_trigger(task_id, prepared)
