"""Queues and concurrency (docs/queues.md): a queue's concurrency limit, one gate per concurrency key,
priority among runs waiting for a slot, a TTL expiring a waiting run, a cancel of a waiting run, a parked
run holding no slot, and the bounds of the options (the SDK's ValidationError, the official routes' 422).
On both backends; the limit across worker processes on Redis is in tests/test_queue_processes.py."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import httpx
import pytest

from bridge import runs, tasks, wait
from bridge.backends.base import Gate
from bridge.config import Settings
from bridge.errors import InvalidOptionError, ValidationError
from bridge.models import Run, RunStatus
from bridge.runtime.queues import release_lost_slots
from tests.conftest import RunningServer, serving
from tests.support.helpers import bearer, open_gate, unique, until_final, until_run


def executing(run: Run) -> bool:
    return run.status is RunStatus.EXECUTING


async def gate_state(server: RunningServer, queue: str, key: str | None = None) -> tuple[list[str], list[str]]:
    return await server.app_bridge.broker.gate_state(Gate(queue, key, 1))


async def held(gate: str, queue: dict[str, Any] | None = None, **options: Any) -> str:
    """A run of `wait-for-gate` (executing until the test opens `gate`) on `queue`."""
    return (await tasks.trigger("wait-for-gate", {"gate": gate}, queue=queue, **options)).id


@pytest.mark.cluster  # gate.lua queues into task streams of the {queue} slot it names
async def test_a_limit_of_one_runs_the_queue_one_at_a_time_and_priority_picks_the_next(server: RunningServer) -> None:
    queue = {"name": unique("q"), "concurrency_limit": 1}
    first, low, high = unique("first"), unique("low"), unique("high")
    first_id = await held(first, queue)
    await until_run(first_id, executing)
    low_id = await held(low, queue)
    high_id = await held(high, queue, priority=10)  # ordered as if queued 10 s earlier than `low`
    assert await gate_state(server, queue["name"]) == ([first_id], [high_id, low_id])
    assert (await runs.retrieve(low_id)).status is RunStatus.QUEUED

    open_gate(first)
    await until_run(high_id, executing)
    assert await gate_state(server, queue["name"]) == ([high_id], [low_id])
    assert (await runs.retrieve(low_id)).status is RunStatus.QUEUED
    open_gate(high)
    await until_run(low_id, executing)
    open_gate(low)
    assert (await until_final(low_id)).status is RunStatus.COMPLETED
    assert await gate_state(server, queue["name"]) == ([], [])  # an unused gate leaves nothing behind


async def test_each_concurrency_key_has_its_own_gate_with_the_queues_limit(server: RunningServer) -> None:
    """The queue's limit is the task's (`one-at-a-time` declares 1); the same key is serialised, two keys run
    in parallel."""
    first, second, other = unique("u1-a"), unique("u1-b"), unique("u2")
    first_id = (await tasks.trigger("one-at-a-time", {"gate": first}, concurrency_key="user-1")).id
    second_id = (await tasks.trigger("one-at-a-time", {"gate": second}, concurrency_key="user-1")).id
    other_id = (await tasks.trigger("one-at-a-time", {"gate": other}, concurrency_key="user-2")).id
    await until_run(first_id, executing)
    await until_run(other_id, executing)  # beside `first`: another key's gate
    assert await gate_state(server, "task/one-at-a-time", "user-1") == ([first_id], [second_id])
    assert await gate_state(server, "task/one-at-a-time", "user-2") == ([other_id], [])
    assert (await runs.retrieve(second_id)).queue == "task/one-at-a-time"

    open_gate(first)
    await until_run(second_id, executing)
    for gate, run_id in ((second, second_id), (other, other_id)):
        open_gate(gate)
        assert (await until_final(run_id)).status is RunStatus.COMPLETED


async def test_a_ttl_expires_a_run_waiting_for_a_slot_and_a_cancel_takes_one_out_of_line(
    server: RunningServer,
) -> None:
    queue = {"name": unique("q"), "concurrency_limit": 1}
    holder = unique("holder")
    holder_id = await held(holder, queue)
    await until_run(holder_id, executing)
    expiring_id = await held(unique("expiring"), queue, ttl=0.3)
    canceled_id = await held(unique("canceled"), queue)
    last = unique("last")
    last_id = await held(last, queue)

    expired = await until_final(expiring_id)
    assert expired.status is RunStatus.EXPIRED and expired.started_at is None
    assert (await runs.cancel(canceled_id)).status is RunStatus.CANCELED
    # Neither held a slot: the holder still has it, and the last run still waits, now alone.
    assert await gate_state(server, queue["name"]) == ([holder_id], [last_id])
    assert (await runs.retrieve(last_id)).status is RunStatus.QUEUED

    open_gate(holder)
    await until_run(last_id, executing)
    open_gate(last)
    assert (await until_final(last_id)).status is RunStatus.COMPLETED


async def test_a_canceled_executing_run_gives_its_slot_to_the_next(server: RunningServer) -> None:
    queue = {"name": unique("q"), "concurrency_limit": 1}
    holder_id = await held(unique("holder"), queue)
    await until_run(holder_id, executing)
    next_gate = unique("next")
    next_id = await held(next_gate, queue)
    await runs.cancel(holder_id)
    await until_run(next_id, executing)
    open_gate(next_gate)
    assert (await until_final(next_id)).status is RunStatus.COMPLETED


async def test_a_parked_run_holds_no_slot_and_takes_one_again_when_resumed(backend_settings: Settings) -> None:
    """The official v4 behaviour: a run waiting on a token (parked, no process) frees its slot."""
    async with serving(replace(backend_settings, wait_hold_seconds=0)) as server:
        queue = {"name": unique("q"), "concurrency_limit": 1}
        parked = await tasks.trigger("await-token", {}, queue=queue)
        waiting = await until_run(parked.id, lambda run: run.waiting_on is not None)
        after = unique("after")
        after_id = await held(after, queue)
        await until_run(after_id, executing)  # the parked run's slot

        token_id = waiting.metadata["tokenId"]
        await wait.complete_token(token_id, {"ok": 1})
        resumed = await until_run(parked.id, lambda run: run.waiting_on is None)
        assert await gate_state(server, queue["name"]) == ([after_id], [parked.id])  # waits for a slot again
        assert resumed.status is not RunStatus.COMPLETED
        open_gate(after)
        assert (await until_final(parked.id)).output == {"ok": True, "output": {"ok": 1}}


async def test_a_parent_waiting_on_a_child_of_its_own_queue_gives_it_the_slot(backend_settings: Settings) -> None:
    """With a limit of 1, a parent and the child it waits for would deadlock if a parked run kept its slot."""
    async with serving(replace(backend_settings, wait_hold_seconds=0)):
        queue = {"name": unique("q"), "concurrency_limit": 1}
        parent = await tasks.trigger("parent-in-queue", {"queue": queue}, queue=queue)
        run = await until_final(parent.id)
        assert run.status is RunStatus.COMPLETED and run.output == {"echo": "child"}


async def test_the_sdk_refuses_queue_options_out_of_bounds_naming_the_option(server: RunningServer) -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"queue": {"name": "a|b"}}, "queue.name"),
        ({"queue": {"name": "x" * 129}}, "queue.name"),
        ({"queue": {"concurrency_limit": 0}}, "queue.concurrency_limit"),
        ({"queue": {"concurrency_limit": 1001}}, "queue.concurrency_limit"),
        ({"queue": {"concurrency_limit": True}}, "queue.concurrency_limit"),
        ({"queue": {"concurrencyLimit": 2}}, "queue.concurrencyLimit"),
        ({"queue": 5}, "queue"),
        ({"concurrency_key": ""}, "concurrency_key"),
        ({"concurrency_key": "k" * 257}, "concurrency_key"),
        ({"priority": -1}, "priority"),
        ({"priority": 30 * 24 * 3600 + 1}, "priority"),
        ({"priority": float("nan")}, "priority"),
    ]
    for options, field in cases:
        with pytest.raises(InvalidOptionError) as refused:
            await tasks.trigger("echo", 1, **options)
        assert refused.value.field == field and isinstance(refused.value, ValidationError), options
    with pytest.raises(InvalidOptionError, match=r"^queue\.concurrency_limit "):
        await tasks.batch_trigger("echo", [{"payload": 1, "options": {"queue": {"concurrency_limit": -1}}}])
    with pytest.raises(InvalidOptionError, match=r"^queue\.concurrency_limit "):
        tasks.task("bad-queue", queue={"concurrency_limit": 0})


async def test_the_official_routes_take_queue_options_and_answer_422_naming_a_bad_one(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    secret = bearer(server.settings.secret_key)
    name = unique("q")
    gate = unique("official")
    body = {
        "payload": {"gate": gate},
        "options": {"queue": {"name": name, "concurrencyLimit": 1}, "concurrencyKey": 42, "priority": 5},
    }
    answer = await http.post("/api/v1/tasks/wait-for-gate/trigger", json=body, headers=secret)
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["id"]
    run = await until_run(run_id, executing)
    assert (run.queue, run.concurrency_key, run.concurrency_limit, run.priority) == (name, "42", 1, 5.0)
    assert await gate_state(server, name, "42") == ([run_id], [])
    open_gate(gate)
    await until_final(run_id)

    cases: list[tuple[dict[str, Any], str]] = [
        ({"queue": {"name": "no spaces"}}, "options.queue.name"),
        ({"queue": {"name": "q", "concurrencyLimit": 0}}, "options.queue.concurrencyLimit"),
        ({"queue": {"name": "q", "concurrency_limit": 1}}, "options.queue.concurrency_limit"),
        ({"queue": []}, "options.queue"),
        ({"concurrencyKey": ["k"]}, "options.concurrencyKey"),
        ({"priority": "high"}, "options.priority"),
        ({"priority": -5}, "options.priority"),
    ]
    for options, field in cases:
        refused = await http.post("/api/v1/tasks/echo/trigger", json={"payload": 1, "options": options}, headers=secret)
        assert refused.status_code == 422, (options, refused.text)
        assert refused.json()["code"] == "invalid_option" and refused.json()["field"] == field, refused.text

    batch_id = (await http.post("/api/v3/batches", json={"runCount": 1}, headers=secret)).json()["id"]
    line = b'{"index":0,"task":"echo","payload":1,"options":{"priority":-1}}\n'
    items = await http.post(f"/api/v3/batches/{batch_id}/items", content=line, headers=secret)
    assert items.status_code == 422 and items.json()["field"] == "options.priority"


async def test_a_worker_handed_a_finished_run_releases_the_slot_its_end_did_not(server: RunningServer) -> None:
    """As when the worker that ended a run died before releasing: the run is stored final, its slot still
    held, and its delivery comes back (reclaimed after the lease) to a worker, which releases it."""
    queue = {"name": unique("q"), "concurrency_limit": 1}
    holder = unique("holder")
    holder_id = await held(holder, queue)
    await until_run(holder_id, executing)
    next_gate = unique("next")
    next_id = await held(next_gate, queue)
    engine = server.app_bridge.engine

    def end(run: Run) -> None:
        run.status = RunStatus.COMPLETED  # stored as the dead worker left it: no release

    assert await gate_state(server, queue["name"]) == ([holder_id], [next_id])
    await engine.update(holder_id, end)  # from here the workers' sweep may release it too: either is right
    await server.app_bridge.broker.enqueue("wait-for-gate", holder_id)  # its delivery, reclaimed
    await until_run(next_id, executing)
    for gate in (holder, next_gate):
        open_gate(gate)
    assert (await until_final(next_id)).status is RunStatus.COMPLETED


@pytest.mark.cluster  # the sweep reads the crowded gates' set and their keys with one pipeline
async def test_the_workers_sweep_releases_a_slot_an_ended_run_still_holds(server: RunningServer) -> None:
    """As when a cancel's process died between storing CANCELED and the release (and its message to the
    worker was lost): the run's execution goes on, nothing will release its slot but the workers' sweep."""
    queue = {"name": unique("q"), "concurrency_limit": 1}
    holder = unique("holder")
    holder_id = await held(holder, queue)
    await until_run(holder_id, executing)
    next_gate = unique("next")
    next_id = await held(next_gate, queue)
    assert await gate_state(server, queue["name"]) == ([holder_id], [next_id])
    broker = server.app_bridge.broker
    run = await broker.get_run(holder_id)
    assert run is not None
    version, run.status, run.version = run.version, RunStatus.CANCELED, run.version + 1
    assert await broker.replace_run(run, version)  # stored straight: no release, no cancel message

    await until_run(next_id, executing)  # within one heartbeat (lease / 3)
    assert await gate_state(server, queue["name"]) == ([next_id], [])
    for gate in (holder, next_gate):
        open_gate(gate)
    assert (await until_final(next_id)).status is RunStatus.COMPLETED


async def test_the_sweep_releases_slots_of_gone_runs_and_leaves_live_ones(server: RunningServer) -> None:
    broker = server.app_bridge.broker
    gate = Gate(unique("q"), "k", 2)
    queue = {"name": gate.queue, "concurrency_limit": 2}
    names = [unique("live"), unique("waiting"), unique("last")]
    live = await held(names[0], queue, concurrency_key="k")
    await until_run(live, executing)
    assert await broker.admit(gate, "wait-for-gate", "run_gone", 0)  # a holder whose run is not stored
    waiting = await held(names[1], queue, concurrency_key="k")
    await until_run(waiting, executing)  # the sweep released the gone run's slot
    last = await held(names[2], queue, concurrency_key="k")
    assert await release_lost_slots(broker) == []  # both holders execute: their slots stay
    assert await broker.gate_state(gate) == (sorted([live, waiting]), [last])
    for name in names:
        open_gate(name)
    assert (await until_final(last)).status is RunStatus.COMPLETED


async def test_the_remote_sdk_sends_the_queue_options(server: RunningServer, remote: object) -> None:
    name = unique("q")
    handle = await tasks.trigger(
        "echo", 1, queue={"name": name, "concurrency_limit": 3}, concurrency_key="user-9", priority=2.5
    )
    await until_final(handle.id)
    run = await server.app_bridge.engine.retrieve(handle.id)  # the public run shape does not show them
    assert (run.queue, run.concurrency_key, run.concurrency_limit, run.priority) == (name, "user-9", 3, 2.5)
    with pytest.raises(InvalidOptionError, match=r"^priority "):  # checked before sending, as a local call
        await tasks.trigger("echo", 1, priority=-1)
