"""The official two-phase batch: phase one reserves a batch id and remembers how many runs it
will hold; phase two triggers items by their index, each index at most once (a retried request
adds nothing twice, and learns the runs the first one triggered). All is remembered for the retention.

(`RunEngine.batch_trigger` is the one-call batch of the Python SDK.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

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


@dataclass(frozen=True)
class ItemRun:
    """The run an item triggered; `id` is None while the request that first sent the item still triggers it."""

    index: int
    id: str | None = None
    is_cached: bool = False  # its idempotency key returned an existing run

    def to_public(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "isCached": self.is_cached}

    @classmethod
    def from_public(cls, data: dict[str, Any]) -> ItemRun:
        return cls(data["index"], data["id"], data["isCached"])


@dataclass
class AddedItems:
    accepted: int = 0
    deduplicated: int = 0
    runs: list[ItemRun] = field(default_factory=list)  # one per item of the request, in its order


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

    async def add_items(self, batch_id: str, items: Sequence[BatchItem]) -> AddedItems:
        """Phase two: triggers each item whose index was not sent before. All or nothing: every item is
        checked before any index is marked sent."""
        if len(items) > self._limits.max_batch_items:
            raise ValidationError(f"a batch has at most {self._limits.max_batch_items} items")
        for item in items:
            await self._engine.check_trigger(item.task_id, item.payload, item.options)
        added = AddedItems()
        for item in items:
            run_key = f"batch-run:{batch_id}:{item.index}"
            if not await self._broker.claim_once(f"batch-item:{batch_id}:{item.index}", self._retention):
                added.deduplicated += 1
                stored = await self._broker.get_value(run_key)  # None while the first request still triggers it
                added.runs.append(ItemRun.from_public(orjson.loads(stored)) if stored else ItemRun(item.index))
                continue
            run, created = await self._engine.trigger(item.task_id, item.payload, item.options, batch_id=batch_id)
            # Remembered, so a request repeated after its answer was lost learns its runs too.
            ran = ItemRun(item.index, run.id, not created)
            await self._broker.put_value(run_key, orjson.dumps(ran.to_public()), self._retention)
            added.accepted += 1
            added.runs.append(ran)
        return added
