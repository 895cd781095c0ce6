"""Child runs: a task triggers runs and waits for their results (`trigger_and_wait` and its batch forms).

The wait is a wait token of the parent's (bridge/runtime/waitpoints.py), so the parent holds, parks and
resumes by replay as for any token. Each child carries the token (`Run.resumes`); the group's run ids are
stored next to it once every child is triggered. Whoever comes last — the end of the last child, or the
parent storing the group after its children already finished — completes the token with every child's
result, in item order; the first completion wins, so racing completers are harmless.

A canceled run cancels the children it waits for, found in its journal (the trigger steps record them).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

import orjson

from bridge.errors import NotFoundError, PayloadTooLargeError
from bridge.models import Run, RunError, RunStatus
from bridge.runtime.engine import ChildOf, RunEngine, TriggerOptions
from bridge.runtime.journal import Entry
from bridge.runtime.waitpoints import Waitpoints

TRIGGER_AND_WAIT = "tasks.trigger_and_wait"
BATCH_TRIGGER_AND_WAIT = "tasks.batch_trigger_and_wait"
CHILD_STEP_KINDS = frozenset({TRIGGER_AND_WAIT, BATCH_TRIGGER_AND_WAIT})

ChildItem = tuple[str, Any, TriggerOptions]  # task id, payload, options


@dataclass(frozen=True)
class Parent:
    run_id: str
    root_run_id: str
    depth: int


def _group_key(token_id: str) -> str:
    return f"children:{token_id}"


def run_result(run: Run) -> dict[str, Any]:
    """A finished child's result, as the official `TaskRunResult`: `{ok, id, taskIdentifier, output | error}`."""
    result: dict[str, Any] = {
        "ok": run.status is RunStatus.COMPLETED,
        "id": run.id,
        "taskIdentifier": run.task_identifier,
    }
    if result["ok"]:
        result["output"] = run.output
    else:
        error = run.error or RunError(f"run {run.id} ended {run.status.value}", run.status.value.title())
        result["error"] = error.to_dict()
    return result


class ChildRuns:
    def __init__(self, engine: RunEngine, waitpoints: Waitpoints) -> None:
        self._engine = engine
        self._broker = engine.broker
        self._waitpoints = waitpoints
        self._retention = engine.settings.retention_seconds
        engine.final_listeners.append(self._run_finished)

    async def start(self, parent: Parent, position: int, items: list[ChildItem], batch: bool) -> dict[str, Any]:
        """Triggers the children of the parent's durable step at `position`; returns what its journal records.
        Keyed by that position: run again (the step was not recorded), it finds the same token and runs."""
        key = f"{parent.run_id}:{position}"
        # Without a timeout the token lasts the retention, as long as the parked parent itself is kept.
        token, _ = await self._waitpoints.create(idempotency_key=f"children:{key}")
        prepared = [
            (
                task_id,
                payload,
                replace(
                    options,
                    child_of=ChildOf(parent.run_id, parent.root_run_id, parent.depth + 1, token.id, f"{key}:{index}"),
                ),
            )
            for index, (task_id, payload, options) in enumerate(items)
        ]
        batch_id = None
        if batch:
            batch_id = "batch_" + hashlib.sha256(key.encode()).hexdigest()[:24]
            _, triggered = await self._engine.batch_trigger(prepared, batch_id)
            runs = [run for run, _ in triggered]
        else:
            runs = [(await self._engine.trigger(*prepared[0]))[0]]
        run_ids = [run.id for run in runs]
        await self._broker.put_value(_group_key(token.id), orjson.dumps(run_ids), self._retention)
        await self.settle(token.id)  # children that finished before the group was stored
        return {
            "token": token.id,
            "batchId": batch_id,
            "runs": [{"id": run.id, "taskIdentifier": run.task_identifier} for run in runs],
        }

    async def settle(self, token_id: str) -> None:
        """Completes the token with its children's results once every one of them finished."""
        stored = await self._broker.get_value(_group_key(token_id))
        if stored is None:  # the parent is still triggering them: it settles once it stored the group
            return
        results = []
        for run_id in orjson.loads(stored):
            run = await self._broker.get_run(run_id)
            if run is not None and not run.status.is_final:
                return
            if run is None:  # expired with the retention
                results.append({"ok": False, "id": run_id, "taskIdentifier": "", "error": _gone(run_id)})
            else:  # an output stored as a packet is read back: the result carries the value
                results.append(run_result(await self._engine.packets.resolved(run)))
        try:
            await self._waitpoints.complete(token_id, {"runs": results})
        except PayloadTooLargeError as exc:
            # The results together exceed what a token holds: the parent still resumes, each child failed.
            failed = {"name": "PayloadTooLargeError", "message": exc.message, "stackTrace": ""}
            too_big = [{**{k: r[k] for k in ("id", "taskIdentifier")}, "ok": False, "error": failed} for r in results]
            await self._waitpoints.complete(token_id, {"runs": too_big})

    async def cancel_children(self, run_id: str) -> None:
        """Cancels the children the run triggered and waits for (those finished stay as they are)."""
        for raw in await self._broker.read_journal(run_id):
            entry = Entry.decode(raw)
            if entry.kind in CHILD_STEP_KINDS:
                for child in entry.result["runs"]:
                    try:
                        await self._engine.cancel(child["id"])
                    except NotFoundError:
                        continue

    async def _run_finished(self, run: Run) -> None:
        if run.status is RunStatus.CANCELED:
            await self.cancel_children(run.id)
        if run.resumes is not None:
            await self.settle(run.resumes)


def _gone(run_id: str) -> dict[str, str]:
    return {"name": "NotFoundError", "message": f"Run not found: {run_id}", "stackTrace": ""}
