"""`@task`, `tasks.trigger` and `tasks.batch_trigger`."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from bridge.client import state as client
from bridge.client.results import BatchHandle, RunHandle
from bridge.config import Limits
from bridge.durations import Moment
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.retries import RetryPolicy
from bridge.runtime.trigger_options import refuse_python_options
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


_ITEM_OPTIONS = ("idempotency_key", "idempotency_key_ttl", "metadata", "max_attempts", "delay", "ttl")


def _tag_list(tags: list[str] | str | None) -> list[str]:
    return [tags] if isinstance(tags, str) else list(tags or [])


async def trigger(
    task_id: str,
    payload: Any = None,
    *,
    tags: list[str] | str | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: str | int | None = None,
    metadata: dict[str, Any] | None = None,
    max_attempts: int | None = None,
    delay: Moment | None = None,
    ttl: str | int | float | timedelta | None = None,
    **unsupported: Any,
) -> RunHandle:
    """Queues a run of `task_id`. `max_attempts` overrides the task's retry policy for this run. `delay` ("1h",
    seconds, a timedelta, a datetime): the run is DELAYED until then. `ttl` ("10m", seconds): a run not started
    that long after it was queued ends EXPIRED. An official option the bridge does not implement (`priority=`,
    `queue=`, `debounce=`...) raises `UnsupportedOptionError`."""
    refuse_python_options("trigger", unsupported)
    options = TriggerOptions(
        tags=_tag_list(tags),
        idempotency_key=idempotency_key,
        idempotency_key_ttl=idempotency_key_ttl,
        metadata=metadata,
        max_attempts=max_attempts,
        delay=delay,
        ttl=ttl,
    )
    return await (await client.current()).trigger(task_id, payload, options)


async def batch_trigger(task_id: str, items: list[dict[str, Any]]) -> BatchHandle:
    """`items` like the official SDK: `[{"payload": ..., "options": {"tags": [...], "delay": "1h", ...}}, ...]`,
    with `trigger`'s options."""
    prepared = []
    for item in items:
        options = dict(item.get("options") or {})
        tags = options.pop("tags", None)
        given = {name: options.pop(name) for name in _ITEM_OPTIONS if name in options}
        refuse_python_options("batch_trigger", options)
        prepared.append((item.get("payload"), TriggerOptions(tags=_tag_list(tags), **given)))
    return await (await client.current()).batch_trigger(task_id, prepared)
