"""Queues and concurrency: the options a trigger and a task give (`queue`, `concurrency_key`, `priority`),
checked against their bounds (docs/limits.md), and the gate a run holds a slot of (docs/queues.md).

A run's gate is its queue, or, with a concurrency key, that key's own copy of the queue with the same
limit. A queue without a concurrency limit has no gate: its runs are queued at once, as before.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections.abc import Mapping
from typing import Any

from bridge.backends.base import Broker, Gate, QueueSpec, default_queue_name
from bridge.errors import InvalidOptionError
from bridge.models import Run

MAX_CONCURRENCY_LIMIT = 1000
MAX_QUEUE_NAME_LENGTH = 128
MAX_CONCURRENCY_KEY_LENGTH = 256
MAX_PRIORITY_SECONDS = 30 * 24 * 3600  # ordered as if queued up to 30 days earlier
SWEEP_GATES = 10  # crowded gates a sweep of lost slots looks at (the next sweep goes on from there)
SWEEP_HOLDERS = 20  # runs holding a slot it reads per gate (a random sample of a gate with more)
# No `|`: it separates a gate's queue from its key in storage (bridge/backends/redis/keys.py).
_QUEUE_NAME = re.compile(rf"[A-Za-z0-9_.:/@-]{{1,{MAX_QUEUE_NAME_LENGTH}}}")


log = logging.getLogger(__name__)


def _invalid(field: str, what: str) -> InvalidOptionError:
    return InvalidOptionError(f"{field} {what}", field)


def check_queue_name(name: object, field: str) -> str:
    if not isinstance(name, str) or not _QUEUE_NAME.fullmatch(name):
        raise _invalid(field, f"is 1 to {MAX_QUEUE_NAME_LENGTH} letters, digits or _ . : / @ -")
    return name


def check_concurrency_limit(limit: object, field: str) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_CONCURRENCY_LIMIT:
        raise _invalid(field, f"is a whole number from 1 to {MAX_CONCURRENCY_LIMIT}")
    return limit


def parse_queue(queue: object, field: str, limit_name: str) -> tuple[str | None, int | None]:
    """(name or None, concurrency limit or None) of a queue option: a name, or a mapping with `name` and
    `limit_name` (`concurrency_limit` in Python, `concurrencyLimit` on the official routes)."""
    if queue is None:
        return None, None
    if isinstance(queue, str):
        return check_queue_name(queue, field), None
    if not isinstance(queue, Mapping):
        raise _invalid(field, f"is a queue name or an object {{name, {limit_name}}}")
    unknown = sorted(set(queue) - {"name", limit_name})
    if unknown:
        raise _invalid(f"{field}.{unknown[0]}", f"is not a queue option (name, {limit_name})")
    name = queue.get("name")
    return (
        None if name is None else check_queue_name(name, f"{field}.name"),
        check_concurrency_limit(queue.get(limit_name), f"{field}.{limit_name}"),
    )


def task_queue_spec(task_id: str, queue: object) -> QueueSpec | None:
    """The queue `@task(queue=...)` declares (a name, or `{"name", "concurrency_limit"}` with the name
    defaulting to `task/<id>`); None without one."""
    name, limit = parse_queue(queue, "queue", "concurrency_limit")
    if queue is None:
        return None
    return QueueSpec(name or default_queue_name(task_id), limit)


def check_concurrency_key(key: object, field: str) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_CONCURRENCY_KEY_LENGTH:
        raise _invalid(field, f"is a string of 1 to {MAX_CONCURRENCY_KEY_LENGTH} characters")
    return key


def check_priority(priority: object, field: str) -> float:
    """Seconds a run is ordered ahead by (0 without one)."""
    if priority is None:
        return 0.0
    if (
        isinstance(priority, bool)
        or not isinstance(priority, (int, float))
        or not math.isfinite(priority)
        or not 0 <= priority <= MAX_PRIORITY_SECONDS
    ):
        raise _invalid(field, f"is a number of seconds from 0 to {MAX_PRIORITY_SECONDS}")
    return float(priority)


def check_options(queue: Any, concurrency_key: Any, priority: Any) -> None:
    """The Python SDK's (and the engine's) check of a trigger's queue options, by their Python names."""
    parse_queue(queue, "queue", "concurrency_limit")
    check_concurrency_key(concurrency_key, "concurrency_key")
    check_priority(priority, "priority")


def gate_of(run: Run) -> Gate | None:
    """The gate a run holds a slot of while it executes; None when its queue has no concurrency limit."""
    if run.queue is None or run.concurrency_limit is None:
        return None
    return Gate(run.queue, run.concurrency_key, run.concurrency_limit)


def score_of(run: Run) -> int:
    """Where a waiting run is in its gate's line: when it was first queued, `priority` seconds earlier."""
    return (run.queued_at or run.created_at) - int(run.priority * 1000)


async def release_lost_slots(broker: Broker) -> list[str]:
    """Releases the slots of crowded gates (full, with runs waiting) held by runs that are final or gone: the
    process that ended such a run died before its release (docs/queues.md). Workers call it every heartbeat;
    at most SWEEP_GATES x SWEEP_HOLDERS run reads. Returns the run ids whose slot it released."""
    released: list[str] = []
    for gate, holders in await broker.crowded_gates(SWEEP_GATES):
        if len(holders) < gate.limit:
            continue  # a slot is free: what waits is being admitted, nothing is lost
        for run_id in random.sample(holders, min(len(holders), SWEEP_HOLDERS)):
            run = await broker.get_run(run_id)
            if run is None or run.status.is_final:
                # Idempotent: the run's own release, late, does nothing more.
                await broker.release(gate, "" if run is None else run.task_identifier, run_id)
                released.append(run_id)
    if released:
        log.warning("released the concurrency slots of ended runs %s (their release was lost)", released)
    return released
