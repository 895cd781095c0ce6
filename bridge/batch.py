"""`batch`: the official namespace for batches of several tasks. In a task:

results = await batch.trigger_and_wait([{"id": "resize", "payload": {...}}, {"id": "ocr", "payload": {...}}])
results = await batch.trigger_by_task_and_wait([{"task": resize, "payload": {...}}, ...])
results.runs[0].unwrap()    # one TaskRunResult per item, in item order
"""

from __future__ import annotations

from typing import Any

from bridge.errors import ValidationError
from bridge.tasks import BatchResult, trigger_options, wait_for_children

__all__ = ["BatchResult", "trigger_and_wait", "trigger_by_task_and_wait"]


async def trigger_and_wait(items: list[dict[str, Any]]) -> BatchResult:
    """In a task: `[{"id": task_id, "payload": ..., "options": {...}}, ...]` as one batch, waited for together."""
    return await _wait("batch.trigger_and_wait", [(item.get("id"), item) for item in items])


async def trigger_by_task_and_wait(items: list[dict[str, Any]]) -> BatchResult:
    """In a task: `[{"task": my_task, "payload": ..., "options": {...}}, ...]` (tasks from `@task`)."""
    return await _wait(
        "batch.trigger_by_task_and_wait", [(getattr(item.get("task"), "id", None), item) for item in items]
    )


async def _wait(what: str, items: list[tuple[Any, dict[str, Any]]]) -> BatchResult:
    if not all(isinstance(task_id, str) for task_id, _ in items):
        raise ValidationError(f"{what}: every item names its task ('id' a task id, or 'task' a @task)")
    prepared = [
        (task_id, item.get("payload"), trigger_options(item.get("options") or {}, "batch.trigger_and_wait"))
        for task_id, item in items
    ]
    batch_id, results = await wait_for_children(what, prepared, batch=True)
    return BatchResult(batch_id or "", results)
