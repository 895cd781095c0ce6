"""Durable runs, on both backends: a wait parks its run (no process holds it) and any worker resumes it by
replaying its journal; retries replay too; a stopping worker hands its runs back; cancel wins.

Worker processes killed with SIGTERM / SIGKILL are in tests/test_durable_processes.py.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Iterable
from dataclasses import replace

import pytest

from bridge import cli, runs, streams, tasks, wait
from bridge.backends.base import Delivery
from bridge.config import Settings
from bridge.models import Run, RunStatus
from bridge.testing.redis_server import RedisServer
from bridge.worker.executor import Worker
from tests.conftest import SECRET_KEY, serving
from tests.support.helpers import open_gate, unique, until_final, until_run, worker_of
from tests.support.tasks import executions, registry


def parked(run: Run) -> bool:
    return run.status is RunStatus.WAITING and run.waiting_on is not None


async def held_by_nobody(worker: Worker, run_id: str) -> bool:
    """Once the parked run's execution has unwound: the worker keeps no coroutine and no slot for it."""
    await worker.released(run_id)
    return run_id not in worker.running_run_ids and worker.waiting_run_count == 0


async def chunks_of(run_id: str, key: str) -> list[object]:
    return [chunk async for chunk in streams.read(run_id, key, timeout_in_seconds=5)]


@pytest.fixture
def quick_parking(backend_settings: Settings) -> Settings:
    """A wait parks its run after 0.1 s in the worker."""
    return replace(backend_settings, wait_hold_seconds=0.1)


async def test_a_parked_run_resumes_by_replay_with_every_effect_once(quick_parking: Settings) -> None:
    async with serving(quick_parking) as server:
        handle = await tasks.trigger("durable-review", {})
        waiting = await until_run(handle.id, parked)
        assert await held_by_nobody(worker_of(server), handle.id)  # no coroutine, no slot
        await wait.complete_token(waiting.metadata["tokenId"], {"approved": True})
        final = await until_final(handle.id)
        chunks = await chunks_of(handle.id, "log")
    assert final.status is RunStatus.COMPLETED
    assert final.output == {"sent": {"sent": True}, "result": {"approved": True}}
    assert executions[handle.id] == ["top", "sent", "top"]  # the code before the wait ran twice, the step once
    assert final.metadata["counter"] == 1  # the increment was not applied again by the replay
    assert final.attempt_number == 1
    assert chunks == ["before-1", "before-2", "after"]  # each chunk once


async def test_a_quick_completion_resumes_in_place_without_replay(backend_settings: Settings) -> None:
    async with serving(replace(backend_settings, wait_hold_seconds=60)):
        handle = await tasks.trigger("durable-review", {})
        waiting = await until_run(handle.id, lambda run: "tokenId" in run.metadata and run.status is RunStatus.WAITING)
        await wait.complete_token(waiting.metadata["tokenId"], "ok")
        final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED and final.output["result"] == "ok"
    assert executions[handle.id] == ["top", "sent"]


async def test_a_parked_run_survives_its_worker_and_resumes_on_another(quick_parking: Settings) -> None:
    async with serving(quick_parking) as server:
        handle = await tasks.trigger("durable-review", {})
        waiting = await until_run(handle.id, parked)
        await worker_of(server).stop()
        replacement = Worker(server.app_bridge, registry)
        await replacement.start()
        try:
            await wait.complete_token(waiting.metadata["tokenId"], {"approved": False})
            final = await until_final(handle.id)
        finally:
            await replacement.stop()
    assert final.status is RunStatus.COMPLETED and final.output["result"] == {"approved": False}
    assert executions[handle.id].count("sent") == 1


async def test_a_stopping_worker_parks_a_run_held_in_a_wait_at_once(backend_settings: Settings) -> None:
    async with serving(replace(backend_settings, wait_hold_seconds=3600)) as server:
        handle = await tasks.trigger("durable-review", {})
        waiting = await until_run(handle.id, lambda run: "tokenId" in run.metadata and run.status is RunStatus.WAITING)
        started = time.monotonic()
        await worker_of(server).stop(grace=30)
        assert time.monotonic() - started < 10  # did not wait for the grace: a wait parks at once
        assert parked(await runs.retrieve(handle.id))
        replacement = Worker(server.app_bridge, registry)
        await replacement.start()
        try:
            await wait.complete_token(waiting.metadata["tokenId"], 1)
            final = await until_final(handle.id)
        finally:
            await replacement.stop()
    assert final.status is RunStatus.COMPLETED and final.output["result"] == 1


async def test_a_stopping_worker_hands_back_what_outlives_the_grace(backend_settings: Settings) -> None:
    gate = unique("gate")
    async with serving(backend_settings) as server:
        handle = await tasks.trigger("wait-for-gate", {"gate": gate})
        await until_run(handle.id, lambda run: run.metadata.get("waiting") is True)
        await worker_of(server).stop(grace=0.1)
        handed_back = await runs.retrieve(handle.id)
        assert handed_back.status is RunStatus.WAITING  # queued again, not CRASHED
        open_gate(gate)
        replacement = Worker(server.app_bridge, registry)
        await replacement.start()
        try:
            final = await until_final(handle.id)
        finally:
            await replacement.stop()
    assert final.status is RunStatus.COMPLETED and final.output == handle.id
    assert final.attempt_number == 1  # a hand-back is not a failed attempt


async def test_a_failed_attempt_is_retried_after_its_backoff_replaying_its_steps(backend_settings: Settings) -> None:
    async with serving(backend_settings):
        started = time.monotonic()
        handle = await tasks.trigger("durable-flaky", {"fail_attempts": 2})
        attempts_seen = {
            run.attempt_number async for run in runs.subscribe_to_run(handle.id) if run.status is RunStatus.EXECUTING
        }
        elapsed = time.monotonic() - started
        final = await runs.retrieve(handle.id)
    assert final.status is RunStatus.COMPLETED and final.output == {"attempts": 3}
    assert final.attempt_number == 3 and {1, 2} <= attempts_seen  # the third one completed at once
    assert executions[handle.id] == ["top", "effect", "top", "top"]  # the step ran once, in the first attempt
    assert elapsed >= 0.2 + 0.4  # min_timeout 0.2 s, factor 2, not randomised


async def test_a_run_fails_once_its_attempts_are_used_up(backend_settings: Settings) -> None:
    async with serving(backend_settings):
        handle = await tasks.trigger("durable-flaky", {"fail_attempts": 9}, max_attempts=2)
        final = await until_final(handle.id)
    assert final.status is RunStatus.FAILED and final.attempt_number == 2
    assert final.error is not None and final.error.name == "RuntimeError"
    assert executions[handle.id].count("top") == 2


async def test_abort_task_run_error_fails_at_once_without_retry(backend_settings: Settings) -> None:
    async with serving(backend_settings):
        handle = await tasks.trigger("durable-abort", None)
        final = await until_final(handle.id)
    assert final.status is RunStatus.FAILED and final.attempt_number == 1
    assert final.error is not None and final.error.name == "AbortTaskRunError"
    assert executions[handle.id] == ["top"]


async def test_code_that_changed_under_a_run_fails_it_naming_the_step(backend_settings: Settings) -> None:
    async with serving(backend_settings):
        handle = await tasks.trigger("durable-changing", None)
        final = await until_final(handle.id)
    assert final.status is RunStatus.FAILED and final.attempt_number == 2
    assert final.error is not None and final.error.name == "NonDeterminismError"
    assert "step 0" in final.error.message
    assert "'first-name'" in final.error.message and "'renamed'" in final.error.message


async def test_a_run_cancelled_while_parked_ends_at_once_and_never_resumes(quick_parking: Settings) -> None:
    async with serving(quick_parking):
        handle = await tasks.trigger("durable-review", {})
        waiting = await until_run(handle.id, parked)
        canceled = await runs.cancel(handle.id)
        assert canceled.status is RunStatus.CANCELED
        await wait.complete_token(waiting.metadata["tokenId"], "too late")
        after = await runs.retrieve(handle.id)
    assert after.status is RunStatus.CANCELED and after.version == canceled.version
    assert executions[handle.id] == ["top", "sent"]


async def test_wait_for_parks_and_resumes_when_its_time_has_come(quick_parking: Settings) -> None:
    async with serving(quick_parking) as server:
        started = time.monotonic()
        handle = await tasks.trigger("pause", {"seconds": 1})
        await until_run(handle.id, parked)
        assert await held_by_nobody(worker_of(server), handle.id)
        final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED and time.monotonic() - started >= 1


async def test_an_input_stream_wait_parks_and_the_value_resumes_it(quick_parking: Settings) -> None:
    async with serving(quick_parking) as server:
        handle = await tasks.trigger("await-approval", {"timeout": 60})
        waiting = await until_run(handle.id, parked)
        assert waiting.waiting_input == "approval" and await held_by_nobody(worker_of(server), handle.id)
        await streams.input("approval").send(handle.id, {"approved": True})
        final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED and final.output == {"approved": True}


async def test_a_parked_input_stream_wait_keeps_its_first_deadline(quick_parking: Settings) -> None:
    async with serving(quick_parking):
        started = time.monotonic()
        handle = await tasks.trigger("await-approval", {"timeout": 1})
        await until_run(handle.id, parked)
        final = await until_final(handle.id)
    assert final.status is RunStatus.FAILED
    assert final.error is not None and final.error.name == "InputStreamTimeoutError"
    assert 1 <= time.monotonic() - started < 10


def test_the_worker_command_takes_the_durable_settings_from_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SECRET_KEY", "tr_dev_cli_flags_0123456789abcdef0123")
    parser = argparse.ArgumentParser()
    cli._common(parser)
    args = parser.parse_args(["--max-attempts", "5", "--wait-hold", "0.5s", "--shutdown-grace", "90"])
    settings = cli._settings(args)
    assert (settings.default_max_attempts, settings.wait_hold_seconds, settings.shutdown_grace_seconds) == (5, 0.5, 90)
    with pytest.raises(SystemExit):
        parser.parse_args(["--wait-hold", "soon"])
    with pytest.raises(cli.CliError, match="1 to 100"):
        cli._settings(parser.parse_args(["--max-attempts", "101"]))


async def test_concurrent_steps_are_refused_rather_than_replayed_out_of_order(backend_settings: Settings) -> None:
    async with serving(backend_settings):
        handle = await tasks.trigger("durable-concurrent-steps", None)
        final = await until_final(handle.id)
    assert final.status is RunStatus.FAILED
    assert final.error is not None and "one at a time" in final.error.message


async def test_concurrent_metadata_changes_are_each_applied_once_across_a_resume(quick_parking: Settings) -> None:
    async with serving(quick_parking):
        handle = await tasks.trigger("durable-concurrent-metadata", {"count": 20, "seconds": 0.5})
        await until_run(handle.id, parked)
        final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED and final.metadata["counter"] == 20


async def test_a_stream_append_inside_a_step_is_refused_naming_the_step(backend_settings: Settings) -> None:
    async with serving(backend_settings):
        handle = await tasks.trigger("durable-append-in-step", None)
        final = await until_final(handle.id)
    assert final.status is RunStatus.FAILED and "log" not in final.realtime_streams
    assert final.error is not None and "inside the step 'effect'" in final.error.message


async def test_metadata_changes_inside_and_around_a_step_are_applied_once_across_a_retry(
    backend_settings: Settings,
) -> None:
    async with serving(backend_settings):
        handle = await tasks.trigger("durable-metadata-in-step", None)
        final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED and final.attempt_number == 2
    assert final.metadata == {"before": 1, "inside": 1, "after": 1}


async def test_a_stopping_worker_parks_a_run_held_in_an_input_wait_at_once(backend_settings: Settings) -> None:
    async with serving(replace(backend_settings, wait_hold_seconds=3600)) as server:
        handle = await tasks.trigger("await-approval", {"timeout": 60})
        await until_run(handle.id, lambda run: run.status is RunStatus.WAITING)
        started = time.monotonic()
        await worker_of(server).stop(grace=30)
        elapsed = time.monotonic() - started
        stopped = await runs.retrieve(handle.id)
    assert parked(stopped) and stopped.waiting_input == "approval"
    assert elapsed < 1  # the unfinished run's inputs are not drained (DRAIN_SECONDS, 2 s, is for a final run)


async def test_a_worker_never_takes_its_own_executing_run_for_abandoned(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker's heartbeat loop that stalls for a lease between its heartbeat and its reclaim (a loaded machine;
    one XAUTOCLAIM per task stream) gets its own delivery back from the reclaim. That run is not abandoned: it
    goes on, with no second execution, which at its last attempt would end it CRASHED while the first one still
    writes its stream, and a reader would end short of the stream."""
    settings = Settings(
        secret_key=SECRET_KEY,
        lease_seconds=1.5,
        default_max_attempts=1,
        shutdown_grace_seconds=0,
        redis_url=redis_server.url,
        key_prefix=unique("rbtest"),
    )
    async with serving(settings) as server:
        broker = server.app_bridge.broker
        gate = unique("gate")
        handle = await tasks.trigger("stream-chunks", {"count": 50, "gate": gate, "gate_at": 10})
        reading = asyncio.ensure_future(chunks_of(handle.id, "numbers"))
        await until_run(handle.id, lambda run: run.realtime_streams == ["numbers"])
        heartbeat, reclaim = broker.heartbeat, broker.reclaim_abandoned
        reclaimed_own = asyncio.Event()

        async def stalled(worker_id: str, deliveries: Iterable[Delivery]) -> None:
            pass  # as if the loop stalled: the delivery's idle time grows past the lease

        async def watched(worker_id: str) -> list[Delivery]:
            reclaimed = await reclaim(worker_id)
            if any(delivery.run_id == handle.id for delivery in reclaimed):
                reclaimed_own.set()
            return reclaimed

        monkeypatch.setattr(broker, "heartbeat", stalled)
        monkeypatch.setattr(broker, "reclaim_abandoned", watched)
        async with asyncio.timeout(10):
            await reclaimed_own.wait()  # the worker's own reclaim returned the run it is executing
        heartbeats = 0
        second_heartbeat = asyncio.Event()

        async def counted(worker_id: str, deliveries: Iterable[Delivery]) -> None:
            nonlocal heartbeats
            await heartbeat(worker_id, deliveries)
            heartbeats += 1
            if heartbeats == 2:
                second_heartbeat.set()

        monkeypatch.setattr(broker, "heartbeat", counted)
        async with asyncio.timeout(10):
            await second_heartbeat.wait()  # the loop went on past that reclaim (and whatever it started)
        still = await broker.get_run(handle.id)
        assert still is not None and still.status is RunStatus.EXECUTING, still
        assert not reading.done()  # the run is still executing: its reader goes on
        open_gate(gate)
        final = await until_final(handle.id)
        assert await reading == list(range(50))
    assert final.status is RunStatus.COMPLETED and final.output == 50
    assert (final.attempt_number, final.executions) == (1, 1)
