"""`metadata`: the running task's own progress data, shown live to every subscriber.

Each call is stored before it returns, so a page sees it as soon as the task moves on.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import ValidationError
from bridge.worker.context import require_run_scope


async def _change(what: str, change: Any) -> dict[str, Any]:
    scope = require_run_scope(f"metadata.{what}")
    engine = scope.bridge.engine
    if scope.durable.in_live_step:  # part of the step's effect: applied when the step runs, not counted
        return await engine.update_metadata(scope.context.run_id, change)
    # Numbered from the top of the task: a replayed change that an earlier execution applied is skipped.
    sequence = scope.durable.next_metadata_change()
    if sequence is None:
        return (await engine.retrieve(scope.context.run_id)).metadata
    return await engine.update_metadata(scope.context.run_id, change, sequence)


async def current() -> dict[str, Any]:
    scope = require_run_scope("metadata.current")
    return (await scope.bridge.engine.retrieve(scope.context.run_id)).metadata


async def get(key: str, default: Any = None) -> Any:
    return (await current()).get(key, default)


async def set(key: str, value: Any) -> None:  # noqa: A001 - the official name
    await _change("set", lambda m: m.__setitem__(key, value))


async def delete(key: str) -> None:
    await _change("delete", lambda m: m.pop(key, None))


async def replace(value: dict[str, Any]) -> None:
    if not isinstance(value, dict):
        raise ValidationError("metadata.replace takes a dict")

    def apply(m: dict[str, Any]) -> None:
        m.clear()
        m.update(value)

    await _change("replace", apply)


async def append(key: str, value: Any) -> None:
    """Adds `value` to the list at `key` (a scalar there becomes a two-item list)."""

    def apply(m: dict[str, Any]) -> None:
        existing = m.get(key)
        m[key] = (
            [value] if existing is None else [*existing, value] if isinstance(existing, list) else [existing, value]
        )

    await _change("append", apply)


async def remove(key: str, value: Any) -> None:
    """Removes every item equal to `value` from the list at `key`."""

    def apply(m: dict[str, Any]) -> None:
        if isinstance(m.get(key), list):
            m[key] = [item for item in m[key] if item != value]

    await _change("remove", apply)


async def increment(key: str, by: float = 1) -> None:
    def apply(m: dict[str, Any]) -> None:
        existing = m.get(key, 0)
        if not isinstance(existing, (int, float)) or isinstance(existing, bool):
            raise ValidationError(f"metadata[{key!r}] is not a number")
        m[key] = existing + by

    await _change("increment", apply)


async def decrement(key: str, by: float = 1) -> None:
    await increment(key, -by)
