"""When a run starts, and what the trigger routes accept: `delay` (DELAYED, then queued once by whichever
process's timer fires first), `runs.reschedule`, `ttl` (EXPIRED when not started in time, by its timer or
by the worker claiming it), and the options the bridge does not implement (refused, never ignored).
On both backends; the official Node SDK's side is in tests/test_official_client.py."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bridge import runs, tasks
from bridge.config import Settings
from bridge.errors import UnsupportedOptionError, ValidationError
from bridge.models import RunStatus, iso_from_ms, now_ms
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.trigger_options import REFUSED
from bridge.testing.redis_server import RedisServer
from bridge.worker.executor import Worker
from tests.conftest import RunningServer, serving, suite_settings
from tests.support.helpers import bearer, open_gate, token, unique, until_final, until_run
from tests.support.tasks import registry


async def official_views(http: httpx.AsyncClient, run_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run as the official retrieve route and the official run feed (its Electric row) show it."""
    auth = bearer(token(f"read:runs:{run_id}"))
    retrieved = (await http.get(f"/api/v3/runs/{run_id}", headers=auth)).json()
    feed = (await http.get(f"/realtime/v1/runs/{run_id}", params={"offset": "-1"}, headers=auth)).json()
    return retrieved, feed[0]["value"]


# delay and reschedule


async def test_a_delayed_run_shows_delayed_then_runs_once_when_its_rescheduled_delay_passes(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    handle = await tasks.trigger("echo", {"n": 1}, delay="1h", ttl="1m")
    delayed = await runs.retrieve(handle.id)
    assert delayed.status is RunStatus.DELAYED and delayed.queued_at is None
    assert delayed.delay_until == delayed.created_at + 3_600_000
    assert delayed.ttl == "1m" and delayed.expires_at is None  # its TTL starts once it is queued
    retrieved, row = await official_views(http, handle.id)
    assert retrieved["status"] == "DELAYED" and retrieved["isQueued"] is True and retrieved["ttl"] == "1m"
    assert retrieved["delayedUntil"] == iso_from_ms(delayed.delay_until)
    assert row["status"] == "DELAYED" and row["delayUntil"] and row["queuedAt"] is None and row["ttl"] == "1m"

    moved = await runs.reschedule(handle.id, delay=timedelta(seconds=0.3))
    assert moved.status is RunStatus.DELAYED and moved.delay_until is not None
    assert moved.delay_until - now_ms() <= 300
    run = await until_final(handle.id)
    assert run.status is RunStatus.COMPLETED and run.output == {"echo": {"n": 1}}
    assert run.delay_until == moved.delay_until
    assert run.queued_at is not None and run.started_at is not None
    assert run.started_at >= run.queued_at >= run.delay_until
    assert run.expires_at == run.queued_at + 60_000  # in time: it completed instead
    assert run.attempt_number == 1 and run.executions == 1


async def test_only_a_delayed_run_is_rescheduled_and_bad_delays_are_400(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    done = await tasks.trigger("echo", 1)
    await until_final(done.id)
    with pytest.raises(ValidationError, match="not delayed"):
        await runs.reschedule(done.id, delay="1h")
    delayed = await tasks.trigger("echo", 1, delay="1h")
    secret = bearer(server.settings.secret_key)
    cases = [
        (done.id, {"delay": "1h"}, 400, "Cannot reschedule a run that is not delayed"),
        (delayed.id, {"delay": 5}, 400, "delay is a duration"),
        (delayed.id, {}, 400, "delay is a duration"),
        (delayed.id, {"delay": "soon"}, 400, "invalid duration"),
        (delayed.id, {"delay": "8d"}, 400, "a delay is at most 1w (BRIDGE_RETENTION"),  # the retention: 7 days
        ("run_" + "0" * 24, {"delay": "1h"}, 404, "Run not found"),
    ]
    for run_id, body, status, message in cases:
        response = await http.post(f"/api/v1/runs/{run_id}/reschedule", json=body, headers=secret)
        assert response.status_code == status and message in response.json()["error"], (body, response.text)
    reader = bearer(token(f"read:runs:{delayed.id}"))
    refused = await http.post(f"/api/v1/runs/{delayed.id}/reschedule", json={"delay": "1m"}, headers=reader)
    assert refused.status_code == 403
    still = await runs.retrieve(delayed.id)  # nothing refused moved it
    assert still.status is RunStatus.DELAYED and still.delay_until == still.created_at + 3_600_000


async def test_a_delayed_run_is_queued_by_another_process_once_the_one_that_triggered_it_is_gone(
    redis_server: RedisServer,
) -> None:
    settings = replace(suite_settings(), redis_url=redis_server.url, key_prefix=f"rbopt{uuid.uuid4().hex[:8]}")
    async with serving(settings):
        other = Bridge(settings)  # another process on the same Redis, without a worker
        await other.start()
        try:
            run, _ = await other.engine.trigger("echo", 1, TriggerOptions(delay=0.5))
        finally:
            await other.stop()  # its timer is gone before the delay passes: the server's fires it
        final = await until_final(run.id)
    assert final.status is RunStatus.COMPLETED and final.executions == 1
    assert final.delay_until is not None and final.queued_at is not None and final.queued_at >= final.delay_until


async def test_delay_and_ttl_are_checked_and_bounded(server: RunningServer) -> None:
    bad: list[dict[str, Any]] = [
        {"delay": "8d"},  # over the retention (7 days)
        {"delay": datetime.now(UTC) + timedelta(days=366)},
        {"delay": "2026-13-45T00:00:00Z"},
        {"delay": ["1h"]},
        {"ttl": "8d"},
        {"ttl": "soon"},
        {"ttl": -1},
        {"ttl": [1]},
    ]
    for options in bad:
        with pytest.raises(ValidationError):
            await tasks.trigger("echo", 1, **options)
    # A moment already passed queues the run at once; a ttl of 0 is none, as the official API.
    handle = await tasks.trigger("echo", 1, delay=datetime.now(UTC) - timedelta(minutes=1), ttl=0)
    run = await until_final(handle.id)
    assert run.status is RunStatus.COMPLETED and run.delay_until is None and run.ttl is None


# ttl


async def test_ttl_expires_a_queued_run_no_worker_takes(backend_settings: Settings) -> None:
    async with serving(backend_settings, with_worker=False) as running:
        await running.app_bridge.broker.register_tasks(["echo"])
        handle = await tasks.trigger("echo", 1, ttl=0.3)
        run = await until_final(handle.id)
        assert run.status is RunStatus.EXPIRED and run.started_at is None and run.attempt_number == 0
        assert run.queued_at is not None and run.expired_at == run.finished_at
        assert run.expired_at is not None and run.expired_at >= run.queued_at + 300
        assert run.error is not None and run.error.message == "Run expired because the TTL (0.3s) was reached"
        async with httpx.AsyncClient(base_url=running.url) as client:
            retrieved, row = await official_views(client, handle.id)
    assert retrieved["status"] == "EXPIRED" and retrieved["isFailed"] is True and retrieved["isCompleted"] is True
    assert retrieved["expiredAt"] == iso_from_ms(run.expired_at) and retrieved["ttl"] == "0.3s"
    assert row["status"] == "EXPIRED" and row["expiredAt"] and row["completedAt"]


async def test_ttl_expires_a_run_whose_worker_is_busy_and_the_worker_then_drops_it(backend_settings: Settings) -> None:
    async with serving(replace(backend_settings, worker_concurrency=1)):
        gate = unique("gate")
        busy = await tasks.trigger("wait-for-gate", {"gate": gate})
        await until_run(busy.id, lambda run: bool(run.metadata.get("waiting")))
        late = await tasks.trigger("echo", 1, ttl=0.3)
        assert (await until_final(late.id)).status is RunStatus.EXPIRED
        in_time = await tasks.trigger("echo", 2, ttl="1m")  # queued behind the expired one
        open_gate(gate)
        assert (await until_final(busy.id)).status is RunStatus.COMPLETED
        # The worker claimed the expired run's delivery before this one's: it did not execute it.
        assert (await until_final(in_time.id)).output == {"echo": 2}
        expired = await runs.retrieve(late.id)
    assert expired.status is RunStatus.EXPIRED and expired.started_at is None and expired.executions == 0


async def test_a_worker_claiming_a_run_past_its_ttl_expires_it_instead_of_starting_it(
    backend_settings: Settings,
) -> None:
    async with serving(backend_settings, with_worker=False) as running:
        bridge = running.app_bridge
        await bridge.waitpoints.timer.stop()  # no timer: only the claim can expire the run
        await bridge.broker.register_tasks(registry.ids)
        handle = await tasks.trigger("echo", 1, ttl=0.05)
        queued = await runs.retrieve(handle.id)
        assert queued.status is RunStatus.QUEUED and queued.expires_at is not None
        await asyncio.sleep(max(0.0, (queued.expires_at - now_ms()) / 1000))  # until the TTL has passed
        worker = Worker(bridge, registry)
        await worker.start()
        try:
            run = await until_final(handle.id)
        finally:
            await worker.stop(grace=0)
    assert run.status is RunStatus.EXPIRED and run.started_at is None and run.executions == 0


# options the bridge does not implement


async def test_the_sdk_refuses_options_it_does_not_implement(server: RunningServer) -> None:
    python_names = [python for python, _ in REFUSED.values() if python]
    assert {"concurrency", "version"} <= set(python_names)
    for name in python_names:
        option: dict[str, Any] = {name: "x"}
        with pytest.raises(UnsupportedOptionError, match=f"^{name} is not supported by the bridge") as refused:
            await tasks.trigger("echo", 1, **option)
        assert refused.value.field == name and refused.value.status == 422
    with pytest.raises(UnsupportedOptionError, match=r"^concurrency is not supported"):
        await tasks.batch_trigger("echo", [{"payload": 1}, {"payload": 2, "options": {"concurrency": 60}}])
    with pytest.raises(TypeError, match="unexpected keyword argument 'prioritee'"):
        await tasks.trigger("echo", 1, prioritee=1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'tgas'"):
        await tasks.batch_trigger("echo", [{"payload": 1, "options": {"tgas": ["a"]}}])
    run = await until_final((await tasks.trigger("echo", 1, concurrency=None)).id)  # unset, as in the official SDK
    assert run.status is RunStatus.COMPLETED


async def test_the_official_routes_refuse_each_option_they_do_not_implement_with_422(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    secret = bearer(server.settings.secret_key)
    tag = unique("refused")  # a valid option beside the refused one
    for name in [*REFUSED, "someNewOption"]:
        body = {"payload": 1, "options": {"tags": [tag], name: "x"}}
        response = await http.post("/api/v1/tasks/echo/trigger", json=body, headers=secret)
        assert response.status_code == 422, (name, response.text)
        answer = response.json()
        assert answer["code"] == "unsupported_option" and answer["field"] == f"options.{name}"
        assert answer["error"].startswith(f"options.{name} is not supported by the bridge: ")
    no_effect = {"machine": "small-1x", "region": "eu-central", "payloadSize": 1, "lockToVersion": None}
    accepted = await http.post(
        "/api/v1/tasks/echo/trigger",
        json={"payload": 1, "options": {**no_effect, "resumeParentOnCompletion": False}},
        headers=secret,
    )
    assert accepted.status_code == 200, accepted.text

    refused_batch = await http.post("/api/v3/batches", json={"runCount": 1, "parentRunId": "run_x"}, headers=secret)
    assert refused_batch.status_code == 422 and refused_batch.json()["field"] == "parentRunId"
    batch_id = (await http.post("/api/v3/batches", json={"runCount": 2}, headers=secret)).json()["id"]
    lines = b'{"index":0,"task":"echo","payload":1}\n{"index":1,"task":"echo","payload":2,"options":{"gates":[]}}\n'
    items = await http.post(f"/api/v3/batches/{batch_id}/items", content=lines, headers=secret)
    assert items.status_code == 422 and items.json()["field"] == "options.gates"
    # All or nothing: the valid first item was not triggered either.
    batch_feed = await http.get(f"/realtime/v1/batches/{batch_id}", params={"offset": "-1"}, headers=secret)
    assert [message for message in batch_feed.json() if "key" in message] == []
