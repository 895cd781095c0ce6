"""`maxDuration` (bridge/runtime/max_duration.py): a run over its compute time is stopped by its worker and
ends TIMED_OUT with MAX_DURATION_EXCEEDED, not retried; from a trigger (the SDK, the official route) or its
task; bad values refused naming the field. On both backends. The official minimum is 5 s: each run here
hangs on a gate the test never opens, so the 5 s are the feature under test, not a wait for something else."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import httpx
import pytest

from bridge import runs, tasks, wait
from bridge.config import Settings
from bridge.errors import InvalidOptionError, ValidationError
from bridge.models import Run, RunStatus
from bridge.runtime.max_duration import ERROR_NAME
from tests.conftest import RunningServer, serving
from tests.support.helpers import bearer, open_gate, unique, until_final, until_run


def timed_out(run: Run, seconds: int, executions: int = 1) -> None:
    assert run.status is RunStatus.TIMED_OUT, run
    assert run.error is not None and run.error.name == ERROR_NAME
    assert run.error.message == f"Run exceeded maximum compute time (maxDuration) of {seconds} seconds"
    assert run.attempt_number == 1 and run.executions == executions  # not retried


async def test_a_run_over_its_max_duration_ends_timed_out_from_a_trigger_its_task_or_the_official_route(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    secret = bearer(server.settings.secret_key)
    # A trigger's maxDuration wins over the task's: started first, this one outlives the task's 5 s.
    outliving = unique("outlives")
    longer = await tasks.trigger("hang-five-seconds", {"gate": outliving}, max_duration=3600)
    await until_run(longer.id, lambda run: run.status is RunStatus.EXECUTING)
    from_sdk = await tasks.trigger("wait-for-gate", {"gate": unique("never")}, max_duration=5, max_attempts=3)
    from_task = await tasks.trigger("hang-five-seconds", {"gate": unique("never")})
    body = {"payload": {"gate": unique("never")}, "options": {"maxDuration": 5.5, "maxAttempts": 3}}
    answer = await http.post("/api/v1/tasks/wait-for-gate/trigger", json=body, headers=secret)
    assert answer.status_code == 200, answer.text
    official = answer.json()["id"]

    sdk_run, task_run, official_run = await asyncio.gather(
        until_final(from_sdk.id), until_final(from_task.id), until_final(official)
    )
    timed_out(sdk_run, 5)
    timed_out(task_run, 5)
    assert official_run.status is RunStatus.TIMED_OUT and official_run.max_duration == 5.5
    retrieved = (await http.get(f"/api/v3/runs/{official}", headers=secret)).json()
    assert retrieved["status"] == "TIMED_OUT" and retrieved["isFailed"] and retrieved["isCompleted"]
    assert retrieved["error"]["name"] == ERROR_NAME

    assert (await runs.retrieve(longer.id)).status is RunStatus.EXECUTING  # past the task's 5 s
    open_gate(outliving)
    assert (await until_final(longer.id)).status is RunStatus.COMPLETED


async def test_compute_time_adds_up_over_executions_and_a_parked_wait_does_not_count(
    backend_settings: Settings,
) -> None:
    """A run parks (no process): its execution's time is stored with it; resumed with no time left (set here,
    as if earlier executions had used it), it ends TIMED_OUT at once. It was parked, never timed out there."""
    async with serving(replace(backend_settings, wait_hold_seconds=0)) as server:
        handle = await tasks.trigger("await-token", {}, max_duration=5)
        parked = await until_run(handle.id, lambda run: run.waiting_on is not None and run.compute_ms > 0)
        assert parked.status is RunStatus.WAITING

        def used_up(run: Run) -> None:
            run.compute_ms = 5000

        await server.app_bridge.engine.update(handle.id, used_up)
        await wait.complete_token(parked.metadata["tokenId"], {"ok": 1})
        timed_out(await until_final(handle.id), 5, executions=2)


async def test_bad_max_durations_are_refused_naming_the_field(server: RunningServer, http: httpx.AsyncClient) -> None:
    too_long = 30 * 24 * 3600 + 1
    for value in [4, 4.99, 0, -5, too_long, float("inf"), float("nan"), "60", True]:
        with pytest.raises(InvalidOptionError) as refused:
            await tasks.trigger("echo", 1, max_duration=value)
        assert refused.value.field == "max_duration" and isinstance(refused.value, ValidationError), value
    for value in [4, 0, too_long, "60", True, [5]]:
        body = {"payload": 1, "options": {"maxDuration": value}}
        answer = await http.post("/api/v1/tasks/echo/trigger", json=body, headers=bearer(server.settings.secret_key))
        assert answer.status_code == 422, (value, answer.text)
        assert answer.json()["code"] == "invalid_option" and answer.json()["field"] == "options.maxDuration"
    with pytest.raises(InvalidOptionError, match=r"^max_duration "):
        await tasks.batch_trigger("echo", [{"payload": 1, "options": {"max_duration": 1}}])
    with pytest.raises(InvalidOptionError, match=r"^max_duration "):
        tasks.task("too-short", max_duration=1)(_noop)


async def test_the_remote_sdk_sends_max_duration(server: RunningServer, remote: object) -> None:
    handle = await tasks.trigger("echo", 1, max_duration=60)
    await until_final(handle.id)
    assert (await server.app_bridge.engine.retrieve(handle.id)).max_duration == 60
    with pytest.raises(InvalidOptionError, match=r"^max_duration "):  # checked before sending, as a local call
        await tasks.trigger("echo", 1, max_duration=4)


async def _noop(payload: Any) -> None:
    return None
