"""A run's journal: the durable steps it completed, in order, so any worker can resume it by replay.

Each execution runs the task function from the top. A durable step (`steps.run`, `wait.create_token`,
`wait.for_token`, `wait.for_` / `until`, an input stream's `wait` deadline) first looks at the journal:
an entry at its position is the step's recorded result, returned at once; past the end, the step runs
live and its result is appended. An entry of another kind or name at the position means the code
changed under the run: `NonDeterminismError`. docs/durability.md has the format and the rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from bridge.backends.base import JournalStore
from bridge.errors import NonDeterminismError, PayloadTooLargeError, ValidationError


class Unwind(BaseException):
    """Leaves the task function without an outcome. A BaseException, so the task's `except Exception`
    blocks do not catch it."""


class Parked(Unwind):
    """The run waits with no process: it is parked on a wait token and resumes, by replay, once it is done."""


class HandedBack(Unwind):
    """The worker is stopping: the run is queued again and another worker resumes it by replay."""


class Fenced(Unwind):
    """A newer execution of this run started elsewhere (this worker was presumed dead): stop at once."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    result: Any

    def encode(self) -> bytes:
        return orjson.dumps({"kind": self.kind, "name": self.name, "result": self.result})

    @classmethod
    def decode(cls, raw: bytes) -> Entry:
        data = orjson.loads(raw)
        return cls(data["kind"], data["name"], data.get("result"))


class Journal:
    """One execution's cursor over its run's journal."""

    def __init__(
        self, store: JournalStore, run_id: str, execution: int, entries: list[Entry], max_entries: int, max_bytes: int
    ) -> None:
        self._store = store
        self.run_id = run_id
        self.execution = execution
        self._entries = entries
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self.position = 0

    @classmethod
    async def open(cls, store: JournalStore, run_id: str, execution: int, max_entries: int, max_bytes: int) -> Journal:
        entries = [Entry.decode(raw) for raw in await store.read_journal(run_id)]
        return cls(store, run_id, execution, entries, max_entries, max_bytes)

    @property
    def replaying(self) -> bool:
        return self.position < len(self._entries)

    def replay(self, kind: str, name: str) -> Entry | None:
        """The recorded entry for the step the code reached now (moving past it), or None once live."""
        if not self.replaying:
            return None
        entry = self._entries[self.position]
        if entry.kind != kind or entry.name != name:
            raise NonDeterminismError(
                f"step {self.position} of run {self.run_id}: the journal holds {entry.kind} {entry.name!r}, "
                f"but the task's code reached {kind} {name!r} there; did the code change while the run was in flight?"
            )
        self.position += 1
        return entry

    async def record(self, kind: str, name: str, result: Any) -> Any:
        """Appends the result of a step that just ran live; returns it as a replay will (decoded JSON)."""
        if len(self._entries) >= self._max_entries:
            raise ValidationError(f"a run records at most {self._max_entries} durable steps")
        entry = Entry(kind, name, result)
        try:
            raw = entry.encode()
        except TypeError as exc:
            raise ValidationError(f"the result of {kind} {name!r} must be JSON-serialisable: {exc}") from exc
        if len(raw) > self._max_bytes:
            raise PayloadTooLargeError(
                f"the result of {kind} {name!r} is {len(raw)} bytes encoded; the limit is {self._max_bytes}"
            )
        if not await self._store.append_journal(self.run_id, self.execution, self.position, raw):
            raise Fenced()
        self._entries.append(Entry.decode(raw))
        self.position += 1
        return self._entries[-1].result
