"""`@task`, `tasks.trigger` and `tasks.batch_trigger`; in a task, `trigger_and_wait` and
`batch_trigger_and_wait` (child runs whose results the task waits for, WAITING meanwhile)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from bridge.client import state as client
from bridge.client.results import BatchHandle, RunHandle
from bridge.config import Limits
from bridge.durations import Moment
from bridge.errors import SubtaskUnwrapError, TaskRunError
from bridge.runtime.children import BATCH_TRIGGER_AND_WAIT, TRIGGER_AND_WAIT, ChildItem
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.queues import task_queue_spec
from bridge.runtime.retries import RetryPolicy
from bridge.runtime.trigger_options import refuse_python_options
from bridge.runtime.waitpoints import TokenStatus, timeout_error
from bridge.worker.context import require_run_scope
from bridge.worker.registry import TaskDefinition, TaskFunction, TaskRegistry, default_registry

_OPTION_NAMES = (
    "tags",
    "idempotency_key",
    "idempotency_key_ttl",
    "metadata",
    "max_attempts",
    "delay",
    "ttl",
    "debounce",
    "queue",
    "concurrency_key",
    "priority",
    "max_duration",
)


@dataclass(frozen=True)
class TaskRunResult:
    """A child run's result (the official `TaskRunResult`): `ok` with its `output`, or not with its `error`."""

    ok: bool
    id: str
    task_identifier: str
    output: Any = None
    error: TaskRunError | None = None

    def unwrap(self) -> Any:
        """The output; raises SubtaskUnwrapError (its `cause` the child's error) when the child did not complete."""
        if self.error is not None:
            raise SubtaskUnwrapError(self.task_identifier, self.id, self.error)
        return self.output


@dataclass(frozen=True)
class BatchResult:
    """What the batch forms of `trigger_and_wait` return: the batch id and one result per item, in item order."""

    id: str
    runs: list[TaskRunResult]


class Task(TaskDefinition):
    """What `@task` returns: the registered function, plus `trigger` for this task."""

    async def trigger(self, payload: Any = None, **options: Any) -> RunHandle:
        """`await my_task.trigger(payload, tags=[...])`: shorthand for `tasks.trigger(my_task.id, ...)`."""
        return await trigger(self.id, payload, **options)

    async def trigger_and_wait(self, payload: Any = None, **options: Any) -> TaskRunResult:
        """In a task: triggers this task and waits for its result (`tasks.trigger_and_wait`)."""
        return await trigger_and_wait(self.id, payload, **options)

    async def batch_trigger_and_wait(self, items: list[dict[str, Any]]) -> BatchResult:
        """In a task: items as `batch_trigger`'s, waited for together (`tasks.batch_trigger_and_wait`)."""
        return await batch_trigger_and_wait(self.id, items)


def task(
    id: str,  # noqa: A002 - the official name
    *,
    retry: dict[str, Any] | None = None,
    queue: str | dict[str, Any] | None = None,
    max_duration: float | None = None,
    registry: TaskRegistry | None = None,
) -> Callable[[TaskFunction], Task]:
    """Registers an `async def fn(payload[, ctx])` as a task: `@task(id="draft-email")`.

    `retry`, as the official option: `{"max_attempts": 3, "factor": 2, "min_timeout": "1s", "max_timeout":
    "10s", "randomize": True}` (what is missing keeps its default; `max_attempts` defaults to the worker's
    `BRIDGE_MAX_ATTEMPTS`). A failed attempt is retried after its backoff, replaying what it recorded
    (docs/durability.md); `AbortTaskRunError` fails the run at once.

    `queue={"name": "emails", "concurrency_limit": 2}`: at most 2 runs of the queue execute at once, across every
    worker (docs/queues.md); the name defaults to `task/<id>`, and other tasks' triggers may name the queue.

    `max_duration` (seconds, 5 to 30 days): past that much compute time the run is stopped and ends TIMED_OUT
    (`MAX_DURATION_EXCEEDED`), not retried; a trigger's `max_duration` overrides it (docs/queues.md)."""
    RetryPolicy.from_spec(retry, 1, Limits().max_attempts)  # refused here, not at the first failure
    spec = task_queue_spec(id, queue)
    return lambda function: (registry or default_registry).register(Task.of(id, function, retry, spec, max_duration))


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
    debounce: dict[str, Any] | None = None,
    queue: str | dict[str, Any] | None = None,
    concurrency_key: str | None = None,
    priority: float | None = None,
    max_duration: float | None = None,
    **unsupported: Any,
) -> RunHandle:
    """Queues a run of `task_id`. `max_attempts` overrides the task's retry policy for this run. `delay` ("1h",
    seconds, a timedelta, a datetime): the run is DELAYED until then. `ttl` ("10m", seconds): a run not started
    that long after it was queued ends EXPIRED. `debounce={"key", "delay", "mode": "leading"|"trailing",
    "max_delay"}`: the triggers of a burst with the same key within `delay` of each other make one run, started
    `delay` after the last (no later than `max_delay` after the first), with the first payload (leading, the
    default) or the last (trailing). `queue` (a queue's name, or `{"name", "concurrency_limit"}`) overrides the
    task's queue; `concurrency_key="user-42"` gives each value its own copy of the queue, with its limit;
    `priority` (seconds) orders the run as if queued that much earlier among runs waiting for a slot
    (docs/queues.md). `max_duration` (seconds) overrides the task's maxDuration. An official option the bridge
    does not implement (`concurrency=`, `version=`) raises `UnsupportedOptionError`."""
    refuse_python_options("trigger", unsupported)
    options = TriggerOptions(
        tags=_tag_list(tags),
        idempotency_key=idempotency_key,
        idempotency_key_ttl=idempotency_key_ttl,
        metadata=metadata,
        max_attempts=max_attempts,
        delay=delay,
        ttl=ttl,
        debounce=debounce,
        queue=queue,
        concurrency_key=concurrency_key,
        priority=priority,
        max_duration=max_duration,
    )
    return await (await client.current()).trigger(task_id, payload, options)


def trigger_options(options: dict[str, Any], function: str) -> TriggerOptions:
    """A batch item's `options` (or `trigger_and_wait`'s keyword options), with `tasks.trigger`'s names: an
    official option the bridge does not implement raises UnsupportedOptionError, any other name TypeError."""
    given = dict(options)
    known = {name: given.pop(name) for name in _OPTION_NAMES if name in given}
    refuse_python_options(function, given)
    return TriggerOptions(tags=_tag_list(known.pop("tags", None)), **known)


async def batch_trigger(task_id: str, items: list[dict[str, Any]]) -> BatchHandle:
    """`items` like the official SDK: `[{"payload": ..., "options": {"tags": [...], "delay": "1h", ...}}, ...]`,
    with `trigger`'s options."""
    prepared = [(item.get("payload"), trigger_options(item.get("options") or {}, "batch_trigger")) for item in items]
    return await (await client.current()).batch_trigger(task_id, prepared)


async def trigger_and_wait(task_id: str, payload: Any = None, **options: Any) -> TaskRunResult:
    """In a task: triggers a child run of `task_id` and waits for its result, with `trigger`'s options. The
    task shows WAITING meanwhile and holds no worker slot (nor, past the wait hold, any process); the child's
    trigger and its result are durable steps, so a replayed task gets the same child, never a second one."""
    _, results = await wait_for_children(
        "tasks.trigger_and_wait", [(task_id, payload, trigger_options(options, "trigger_and_wait"))]
    )
    return results[0]


async def batch_trigger_and_wait(task_id: str, items: list[dict[str, Any]]) -> BatchResult:
    """In a task: `batch_trigger`'s items, triggered as one batch and waited for together; the results come in
    item order once the last child finished."""
    prepared = [
        (task_id, item.get("payload"), trigger_options(item.get("options") or {}, "batch_trigger_and_wait"))
        for item in items
    ]
    batch_id, results = await wait_for_children("tasks.batch_trigger_and_wait", prepared, batch=True)
    return BatchResult(batch_id or "", results)


async def wait_for_children(
    what: str, items: list[ChildItem], *, batch: bool = False
) -> tuple[str | None, list[TaskRunResult]]:
    """Triggers `items` as children of the running task and waits for all; (batch id, results in item order)."""
    durable = require_run_scope(what).durable
    task_ids = {task_id for task_id, _, _ in items}
    name = next(iter(task_ids)) if len(task_ids) == 1 else ""  # a replay must reach the same task(s)
    kind = BATCH_TRIGGER_AND_WAIT if batch else TRIGGER_AND_WAIT
    started, done = await durable.trigger_and_wait(kind, name, items, batch)
    if done["status"] == TokenStatus.TIMED_OUT:  # the retention passed before the children finished
        error = timeout_error(started["token"], done["output"])
        failed = TaskRunError(error.message, type(error).__name__)
        return started["batchId"], [
            TaskRunResult(False, r["id"], r["taskIdentifier"], error=failed) for r in started["runs"]
        ]
    return started["batchId"], [_result(r) for r in done["output"]["runs"]]


def _result(recorded: dict[str, Any]) -> TaskRunResult:
    if recorded["ok"]:
        return TaskRunResult(True, recorded["id"], recorded["taskIdentifier"], output=recorded.get("output"))
    error = recorded["error"]
    cause = TaskRunError(error.get("message", ""), error.get("name", "Error"), error.get("stackTrace", ""))
    return TaskRunResult(False, recorded["id"], recorded["taskIdentifier"], error=cause)
