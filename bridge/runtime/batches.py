"""The official two-phase batch: phase one reserves a batch id and remembers how many runs it
will hold; phase two triggers items by their index, each index at most once (a retried request
adds nothing twice). Both are remembered for the retention.

(`RunEngine.batch_trigger` is the one-call batch of the Python SDK.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from bridge.errors import NotFoundError, ValidationError
from bridge.models import new_id
from bridge.runtime.engine import RunEngine, TriggerOptions

MAX_BATCH_ID_LENGTH = 64


@dataclass(frozen=True)
class BatchItem:
    index: int
    task_id: str
    payload: Any
    options: TriggerOptions


def _run_count_key(batch_id: str) -> str:
    return f"batch:{batch_id}"


def is_item_index(index: object, run_count: int) -> bool:
    """An item's index: a whole number from 0 to the batch's run count - 1."""
    return isinstance(index, int) and not isinstance(index, bool) and 0 <= index < run_count


class Batches:
    def __init__(self, engine: RunEngine) -> None:
        self._engine = engine
        self._broker = engine.broker
        self._limits = engine.limits
        self._retention = engine.settings.retention_seconds

    def check_run_count(self, run_count: object) -> int:
        if not isinstance(run_count, int) or isinstance(run_count, bool) or run_count < 1:
            raise ValidationError("runCount must be a positive integer")
        if run_count > self._limits.max_batch_items:
            raise ValidationError(f"a batch has at most {self._limits.max_batch_items} items")
        return run_count

    async def create(self, run_count: int) -> str:
        """Phase one: a new batch id that will hold `run_count` runs."""
        self.check_run_count(run_count)
        batch_id = new_id("batch_")
        await self._broker.put_value(_run_count_key(batch_id), str(run_count).encode(), self._retention)
        return batch_id

    async def run_count(self, batch_id: str) -> int:
        """The run count phase one announced; NotFoundError for a batch it did not create (or that expired)."""
        announced = None
        if len(batch_id) <= MAX_BATCH_ID_LENGTH:
            announced = await self._broker.get_value(_run_count_key(batch_id))
        if announced is None:
            raise NotFoundError(f"Batch not found: {batch_id[:MAX_BATCH_ID_LENGTH]}")
        return int(announced)

    async def add_items(self, batch_id: str, items: Sequence[BatchItem]) -> tuple[int, int]:
        """Phase two: triggers each item whose index was not sent before; returns (accepted, deduplicated).
        All or nothing: every item is checked before any index is marked sent."""
        if len(items) > self._limits.max_batch_items:
            raise ValidationError(f"a batch has at most {self._limits.max_batch_items} items")
        for item in items:
            await self._engine.check_trigger(item.task_id, item.payload, item.options)
        accepted = deduplicated = 0
        for item in items:
            if not await self._broker.claim_once(f"batch-item:{batch_id}:{item.index}", self._retention):
                deduplicated += 1
                continue
            await self._engine.trigger(item.task_id, item.payload, item.options, batch_id=batch_id)
            accepted += 1
        return accepted, deduplicated
