"""Child runs, on both backends: a task waits for runs it triggers (`trigger_and_wait` and the batch forms),
parked meanwhile; the children's ends resume it by replay, which finds the same children; a canceled parent
cancels its children. Across real worker processes: tests/test_durable_processes.py."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import replace

import httpx
import pytest

from bridge import batch, runs, tasks
from bridge.config import Settings
from bridge.models import Run, RunStatus
from tests.conftest import SECRET_KEY, serving
from tests.support.helpers import TIMEOUT, bearer, open_gate, unique, until_final, until_run
from tests.support.tasks import echo, executions


def parked(run: Run) -> bool:
    return run.status is RunStatus.WAITING and run.waiting_on is not None


@pytest.fixture
def quick_parking(backend_settings: Settings) -> Settings:
    """A wait parks its run after 0.1 s in the worker."""
    return replace(backend_settings, wait_hold_seconds=0.1)


async def test_a_batch_waits_for_its_last_child_and_returns_results_in_item_order(quick_parking: Settings) -> None:
    key, tag = unique("children"), unique("tag")
    gates = [unique("gate") for _ in range(3)]
    children = [{"key": key, "n": n, "gate": gate, "fail": n == 2} for n, gate in zip((1, 2, 3), gates, strict=True)]
    async with serving(quick_parking) as server:
        handle = await tasks.trigger("parent-batch", {"tag": tag, "children": children})
        waiting = await until_run(handle.id, parked)  # no process holds it while its children run
        for gate in reversed(gates):  # the last item finishes first: the order is the items', not the ends'
            open_gate(gate)
        final = await until_final(handle.id)
        child_ids = executions[key]
        child_runs = [await runs.retrieve(child_id) for child_id in child_ids]
        async with httpx.AsyncClient(base_url=server.url, headers=bearer(SECRET_KEY)) as http:
            official = (await http.get(f"/api/v3/runs/{child_ids[0]}")).json()
    assert waiting.status is RunStatus.WAITING
    assert final.status is RunStatus.COMPLETED, final.error
    failed = next(child for child in child_runs if child.status is RunStatus.FAILED)
    assert final.output == [2, ["child-gated", True, "AbortTaskRunError", "child 2 failed"], 6]
    assert executions[handle.id] == ["top", "top", "after"]  # resumed by replay once the last child ended
    assert len(set(child_ids)) == 3  # the replay triggered no second batch
    assert failed.payload["n"] == 2
    for child in child_runs:
        assert (child.parent_task_run_id, child.root_task_run_id, child.depth) == (handle.id, handle.id, 1)
        assert child.batch_id is not None and child.tags == [tag]
    assert official["depth"] == 1 and official["triggerFunction"] == "batchTriggerAndWait"
    related = official["relatedRuns"]
    assert related["parent"]["id"] == related["root"]["id"] == handle.id
    assert related["parent"]["status"] == "COMPLETED" and "payload" not in related["parent"]


async def test_trigger_and_wait_replayed_gets_the_same_child(quick_parking: Settings) -> None:
    key, gate = unique("child"), unique("gate")
    async with serving(quick_parking):
        handle = await tasks.trigger("parent-one", {"child": {"key": key, "n": 21, "gate": gate}})
        await until_run(handle.id, parked)
        open_gate(gate)
        final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED, final.error
    assert executions[key] == [final.output["child"]]  # one child, run once
    assert final.output["output"] == 42
    assert executions[handle.id] == ["top", "top"]


async def test_batch_trigger_and_wait_over_several_tasks(backend_settings: Settings) -> None:
    async with serving(backend_settings):
        handle = await tasks.trigger("parent-mixed")
        final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED, final.error
    assert final.output == [[True, "echo", {"echo": "first"}], [False, "fail", None]]


async def test_a_canceled_parent_cancels_its_waiting_children(quick_parking: Settings) -> None:
    key, tag, gate = unique("children"), unique("tag"), unique("gate")  # the gate never opens
    children = [{"key": key, "n": n, "gate": gate} for n in (1, 2)]
    async with serving(quick_parking):
        handle = await tasks.trigger("parent-batch", {"tag": tag, "children": children})
        await until_run(handle.id, parked)
        await runs.cancel(handle.id)
        canceled: dict[str, Run] = {}
        async with asyncio.timeout(TIMEOUT):
            async with contextlib.aclosing(runs.subscribe_to_runs_with_tag(tag)) as feed:
                async for child in feed:
                    canceled[child.id] = child
                    if len(canceled) == 2 and all(c.status is RunStatus.CANCELED for c in canceled.values()):
                        break
        parent = await runs.retrieve(handle.id)
    assert parent.status is RunStatus.CANCELED


async def test_outside_a_task_waiting_for_children_is_refused() -> None:
    for call in (
        tasks.trigger_and_wait("echo", 1),
        tasks.batch_trigger_and_wait("echo", [{"payload": 1}]),
        batch.trigger_and_wait([{"id": "echo", "payload": 1}]),
        batch.trigger_by_task_and_wait([{"task": echo, "payload": 1}]),
    ):
        with pytest.raises(RuntimeError, match="can only be called from inside a running task"):
            await call


async def test_results_over_the_bound_together_fail_every_child_of_the_wait(backend_settings: Settings) -> None:
    """Each output fits (1 MiB), both together do not: the parent still resumes, with the bound named."""
    async with serving(backend_settings):
        within = await tasks.trigger("parent-of-big-outputs", [1000, 1000])
        beyond = await tasks.trigger("parent-of-big-outputs", [600_000, 600_000])
        finals = [await until_final(within.id), await until_final(beyond.id)]
    assert [final.output for final in finals] == [
        [[True, None], [True, None]],
        [[False, "PayloadTooLargeError"], [False, "PayloadTooLargeError"]],
    ]
