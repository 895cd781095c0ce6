"""Wait tokens end to end, on both backends: the SDK's rules (idempotency, first completion wins,
timeouts, including one that passes while the bridge is stopped), a task waiting without a worker
slot, the official HTTP routes and callback URL, the WebSocket `complete` frame, a bridge restart
between create and complete, and the official Node SDK and `useWaitToken`. Tests synchronise on
run states (the run feed); the only sleeps let a deadline pass, which is the behaviour under test."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from bridge import runs, tasks, wait
from bridge.backends.channels import waitpoint_channel
from bridge.config import Settings
from bridge.errors import NotFoundError, PayloadTooLargeError, ValidationError
from bridge.models import RunStatus, now_ms
from bridge.runtime import state
from bridge.runtime.access import authenticate, create_public_token
from bridge.runtime.core import Bridge
from bridge.runtime.hub import Message
from bridge.runtime.waitpoints import TIMER_BATCH, WaitpointTimeoutError, callback_signature
from bridge.testing.redis_server import start_redis_server
from bridge.worker.executor import Worker
from tests.conftest import SECRET_KEY, RunningServer, serving, start_server, stop_server, suite_settings
from tests.support.helpers import bearer, token, unique, until_final, until_run, worker_of
from tests.support.official_client import run_script
from tests.support.tasks import registry
from tests.support.ws_client import connect, error, of_type

pytestmark = pytest.mark.cluster

MIB = 1024 * 1024


async def waiting_token(run_id: str) -> str:
    """The token a running `await-token` run waits for, once the run shows WAITING."""
    run = await until_run(run_id, lambda r: r.status is RunStatus.WAITING or r.status.is_final)
    assert run.status is RunStatus.WAITING, run.status
    return str(run.metadata["tokenId"])


def secret_headers() -> dict[str, str]:
    return bearer(SECRET_KEY)


async def pass_deadline(deadline: datetime | None) -> None:
    """Lets wall-clock time pass a token's deadline: the behaviour under test is time itself."""
    assert deadline is not None
    await asyncio.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)


# SDK rules


async def test_create_retrieve_complete_and_first_completion_wins(server: RunningServer) -> None:
    token_ = await wait.create_token(tags=["doc:42", "doc:42", "team:a"])
    assert token_.id.startswith("waitpoint_") and not token_.is_cached
    assert token_.url == f"{server.url}/api/v1/waitpoints/tokens/{token_.id}/callback/" + callback_signature(
        SECRET_KEY, token_.id
    )
    assert authenticate(SECRET_KEY, token_.public_access_token).scopes == (f"write:waitpoints:{token_.id}",)
    waiting = await wait.retrieve_token(token_)
    assert waiting.status == "WAITING" and waiting.tags == ["doc:42", "team:a"]
    assert waiting.completed_at is None and waiting.output is None
    # Without a timeout, a token times out when the retention ends: nothing waits for a deleted token.
    assert waiting.timeout_at - waiting.created_at == timedelta(seconds=server.settings.retention_seconds)

    await wait.complete_token(token_.id, {"approved": True})
    await wait.complete_token(token_.id, {"approved": False})  # succeeds, changes nothing
    done = await wait.retrieve_token(token_.id)
    assert done.status == "COMPLETED" and done.output == {"approved": True} and done.error is None
    assert done.completed_at is not None and done.completed_at >= done.created_at


async def test_refusals(server: RunningServer) -> None:
    with pytest.raises(NotFoundError):
        await wait.complete_token("waitpoint_doesnotexist", 1)
    with pytest.raises(NotFoundError):
        await wait.retrieve_token("waitpoint_doesnotexist")
    with pytest.raises(ValidationError, match="invalid duration"):
        await wait.create_token(timeout="10 minutes")
    with pytest.raises(ValidationError, match="at most 10 tags"):
        await wait.create_token(tags=[f"t{i}" for i in range(11)])
    with pytest.raises(ValidationError, match="idempotencyKey"):
        await wait.create_token(idempotency_key="k" * 2049)
    with pytest.raises(ValidationError, match="at most 365 days"):
        await wait.create_token(timeout="53w")
    for absurd in (float("nan"), float("inf"), 1e300, timedelta.max, datetime.max):
        with pytest.raises(ValidationError):
            await wait.create_token(timeout=absurd)
    with pytest.raises(ValidationError):
        await wait.create_token(idempotency_key="k", idempotency_key_ttl=float("nan"))
    created = await wait.create_token()
    with pytest.raises(PayloadTooLargeError):
        await wait.complete_token(created, "x" * MIB)
    assert (await wait.retrieve_token(created)).status == "WAITING"  # a refused completion changes nothing
    with pytest.raises(RuntimeError, match="inside a running task"):
        await wait.for_token(created)


async def test_idempotency_key_returns_the_same_token_within_its_ttl(server: RunningServer) -> None:
    key = unique("review")
    first = await wait.create_token(idempotency_key=key, timeout="10m")
    again = await wait.create_token(idempotency_key=key, timeout="1h")
    assert again.id == first.id and again.is_cached and not first.is_cached
    assert (await wait.create_token(idempotency_key=unique("other"))).id != first.id
    retrieved = await wait.retrieve_token(first)
    assert retrieved.idempotency_key == key and retrieved.idempotency_key_expires_at is not None

    short_key = unique("short")
    short = await wait.create_token(idempotency_key=short_key, idempotency_key_ttl="1s")
    expires = (await wait.retrieve_token(short)).idempotency_key_expires_at
    await pass_deadline(expires)
    fresh = await wait.create_token(idempotency_key=short_key)
    assert fresh.id != short.id and not fresh.is_cached


async def test_timeout_as_datetime_or_duration(server: RunningServer) -> None:
    deadline = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    at_date = await wait.retrieve_token(await wait.create_token(timeout=deadline))
    assert at_date.timeout_at == deadline
    before = datetime.now(UTC)
    in_weeks = await wait.retrieve_token(await wait.create_token(timeout="4w"))
    assert in_weeks.timeout_at is not None
    assert timedelta(weeks=4, milliseconds=-1) <= in_weeks.timeout_at - before < timedelta(weeks=4, seconds=5)


async def test_a_deadline_in_the_past_times_out_at_once(server: RunningServer) -> None:
    long_ago = await wait.create_token(timeout=datetime(1, 1, 1, tzinfo=UTC))
    retrieved = await wait.retrieve_token(long_ago)
    assert retrieved.status == "TIMED_OUT" and retrieved.timeout_at >= retrieved.created_at


async def test_timed_out_token_keeps_its_timeout_even_if_completed_later(server: RunningServer) -> None:
    created = await wait.create_token(timeout="0.3s")
    await pass_deadline((await wait.retrieve_token(created)).timeout_at)
    await wait.complete_token(created, {"late": True})  # succeeds, as for any done token
    retrieved = await wait.retrieve_token(created)
    assert retrieved.status == "TIMED_OUT" and retrieved.output is None
    assert isinstance(retrieved.error, WaitpointTimeoutError) and "timed out at" in retrieved.error.message


async def test_the_timer_fires_every_passed_deadline_in_batches(server: RunningServer) -> None:
    """More deadlines passing at once than the timer reads per round trip (100): every one fires,
    without anyone reading the tokens (each waiter hears its token's published result)."""
    bridge = await state.current()
    timer = bridge.waitpoints.timer
    await timer.stop()  # the only timer of this test's backend: nothing fires before the listeners attach
    try:
        created = [await wait.create_token(timeout="0.3s") for _ in range(TIMER_BATCH + 50)]
        fired = {t.id: asyncio.get_running_loop().create_future() for t in created}

        def on_message(channel: str, message: Message | None) -> None:
            future = fired[channel.removeprefix("waitpoint:")]
            if message is not None and not future.done():
                future.set_result(message.raw)

        for created_token in created:
            await bridge.hub.attach(waitpoint_channel(created_token.id), on_message)
        await pass_deadline((await wait.retrieve_token(created[-1])).timeout_at)
        timer.start()
        async with asyncio.timeout(15):
            results = [orjson.loads(r) for r in await asyncio.gather(*fired.values())]
        assert {r["status"] for r in results} == {"TIMED_OUT"}
        await timer.fire_due()  # whatever the running timer had not dropped yet is dropped now
        assert await bridge.broker.due_waitpoints(now_ms(), 10) == []
        for created_token in created:
            await bridge.hub.detach(waitpoint_channel(created_token.id), on_message)
    finally:
        if timer.stopped:
            timer.start()


async def test_a_waiter_reads_its_token_at_the_deadline_when_no_timer_fires(server: RunningServer) -> None:
    """The published result is the normal wake-up; with no timer running anywhere (or a lost
    notification), the waiting task reads the token itself just after its deadline."""
    timer = (await state.current()).waitpoints.timer
    await timer.stop()
    try:
        created = await wait.create_token(timeout="0.5s")
        handle = await tasks.trigger("await-token", {"tokenId": created.id})
        run = await until_final(handle.id)
        assert run.output["ok"] is False and "timed out" in run.output["error"]
    finally:
        timer.start()


async def test_completed_tokens_leave_the_deadline_index(server: RunningServer) -> None:
    bridge = await state.current()
    created = [await wait.create_token(timeout="30d") for _ in range(1500)]
    for created_token in created:
        await wait.complete_token(created_token, None)
    assert await bridge.broker.next_waitpoint_deadline() is None


async def test_a_record_the_timer_cannot_read_does_not_stop_it(server: RunningServer) -> None:
    bridge = await state.current()
    await bridge.broker.insert_waitpoint("waitpoint_garbage", b"not json", now_ms(), 60, None, 0)
    created = await wait.create_token(timeout="0.3s")
    handle = await tasks.trigger("await-token", {"tokenId": created.id})
    run = await until_final(handle.id)  # the timer fired it, after failing on the garbage record
    assert run.output["ok"] is False and "timed out" in run.output["error"]
    assert await bridge.broker.due_waitpoints(now_ms(), 10) == []  # the unreadable one was dropped too


# a task waiting for a token


async def test_task_waits_without_its_slot_and_resumes_with_the_output(backend_settings: Settings) -> None:
    async with serving(replace(backend_settings, worker_concurrency=1)):
        handle = await tasks.trigger("await-token", {"tags": ["review"]})
        token_id = await waiting_token(handle.id)
        other = await tasks.trigger("echo", {"while": "waiting"})  # the only slot is free meanwhile
        assert (await until_final(other.id)).status is RunStatus.COMPLETED
        await wait.complete_token(token_id, {"approved": True, "by": "sdk"})
        run = await until_final(handle.id)
        assert run.status is RunStatus.COMPLETED
        assert run.output == {"ok": True, "output": {"approved": True, "by": "sdk"}}


async def test_past_the_waiting_runs_bound_a_waiting_run_keeps_its_slot(backend_settings: Settings) -> None:
    """With `max_waiting_runs_per_worker` runs suspended, the next waiting run keeps its slot: the
    worker (one slot here) claims nothing more until that wait ends."""
    limits = replace(backend_settings.limits, max_waiting_runs_per_worker=1)
    async with serving(replace(backend_settings, worker_concurrency=1, limits=limits)) as running:
        worker = worker_of(running)
        first = await tasks.trigger("await-token", {})
        first_token = await waiting_token(first.id)
        second = await tasks.trigger("await-token", {})  # the freed slot runs it
        second_token = await waiting_token(second.id)
        assert worker.waiting_run_count == 1  # the second one waits holding the only slot
        queued = await tasks.trigger("echo", {"queued": True})
        assert (await runs.retrieve(queued.id)).status is RunStatus.QUEUED
        await wait.complete_token(second_token, "second")
        assert (await until_final(second.id)).output == {"ok": True, "output": "second"}
        assert (await until_final(queued.id)).status is RunStatus.COMPLETED
        await wait.complete_token(first_token, "first")
        assert (await until_final(first.id)).output == {"ok": True, "output": "first"}


async def test_task_gets_a_timeout_result_and_unwrap_raises(server: RunningServer) -> None:
    handle = await tasks.trigger("await-token", {"timeout": "1s"})
    token_id = await waiting_token(handle.id)
    run = await until_final(handle.id)  # nobody completes it: the timer resumes the task
    assert run.status is RunStatus.COMPLETED and run.output["ok"] is False
    assert "timed out at" in run.output["error"]
    assert (await wait.retrieve_token(token_id)).status == "TIMED_OUT"
    result = wait.TokenResult[Any](ok=False, error=WaitpointTimeoutError("timed out"))
    with pytest.raises(WaitpointTimeoutError):
        result.unwrap()


async def test_waiting_for_a_token_already_done_returns_at_once(server: RunningServer) -> None:
    created = await wait.create_token()
    await wait.complete_token(created, "early")
    handle = await tasks.trigger("await-token", {"tokenId": created.id})
    run = await until_final(handle.id)
    assert run.output == {"ok": True, "output": "early"}


async def test_cancel_while_waiting_ends_the_run_canceled(server: RunningServer) -> None:
    handle = await tasks.trigger("await-token", {})
    token_id = await waiting_token(handle.id)
    await runs.cancel(handle.id)
    assert (await until_final(handle.id)).status is RunStatus.CANCELED
    assert (await wait.retrieve_token(token_id)).status == "WAITING"  # the token outlives its waiter


async def test_wait_for_and_until_pause_without_the_slot(backend_settings: Settings) -> None:
    async with serving(replace(backend_settings, worker_concurrency=1)):
        paused = await tasks.trigger("pause", {"seconds": 1})
        await until_run(paused.id, lambda run: run.status is RunStatus.WAITING)
        other = await tasks.trigger("echo", {"while": "paused"})  # the only slot is free meanwhile
        assert (await until_final(other.id)).status is RunStatus.COMPLETED
        assert (await until_final(paused.id)).output == "resumed"

        past = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
        assert (await until_final((await tasks.trigger("pause", {"until": past})).id)).output == "resumed"
        refused = await until_final((await tasks.trigger("pause", {"until": past, "throw": True})).id)
        assert refused.status is RunStatus.FAILED and refused.error is not None
        assert refused.error.message == "Date is in the past"
        negative = await until_final((await tasks.trigger("pause", {"seconds": -1})).id)
        assert negative.status is RunStatus.FAILED
    with pytest.raises(RuntimeError, match="inside a running task"):
        await wait.for_(seconds=1)


# timeouts and restarts


async def test_a_deadline_that_passed_while_the_bridge_was_stopped_fires_when_it_is_back(
    backend_settings: Settings,
) -> None:
    """Every bridge stopped at the deadline: the first one that starts fires it, without anyone reading
    the token (its timer publishes the result). Redis: a new bridge, as after a process restart; memory:
    the same one restarted, since an in-memory backend lives and dies with its process."""
    first = Bridge(backend_settings)
    await first.start()
    state.use(first)
    created = await wait.create_token(timeout="1s")
    deadline = (await wait.retrieve_token(created)).timeout_at
    await first.stop()
    await pass_deadline(deadline)
    back = Bridge(backend_settings) if backend_settings.redis_url else first
    await back.broker.start()  # storage and notifications first, the timer after the listener attached
    state.use(back)
    fired: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def on_message(_: str, message: Message | None) -> None:
        if message is not None and not fired.done():
            fired.set_result(message.raw)

    await back.hub.attach(waitpoint_channel(created.id), on_message)
    try:
        stored = await back.broker.get_waitpoint(created.id)
        assert stored is not None and stored[1] is None  # nothing fired it while every bridge was down
        back.waitpoints.timer.start()
        async with asyncio.timeout(10):
            assert orjson.loads(await fired)["status"] == "TIMED_OUT"
        retrieved = await wait.retrieve_token(created)
        assert retrieved.status == "TIMED_OUT" and retrieved.completed_at == deadline
    finally:
        await back.stop()


async def test_a_bridge_restart_between_create_and_complete(redis_server: Any) -> None:
    """Redis: the worker runs in its own process (here its own Bridge); the bridge the page talks to
    restarts while the task waits; completing through the new bridge resumes the task."""
    settings = suite_settings(redis_url=redis_server.url, key_prefix=unique("wp"))
    worker_bridge = Bridge(settings)
    await worker_bridge.start()
    worker = Worker(worker_bridge, registry)
    await worker.start()
    try:
        async with serving(settings, with_worker=False):
            state.use(worker_bridge)
            handle = await tasks.trigger("await-token", {"timeout": "10m"})
            token_id = await waiting_token(handle.id)
        async with serving(settings, with_worker=False) as running:
            async with httpx.AsyncClient(base_url=running.url, timeout=30) as http:
                access = create_public_token(SECRET_KEY, [f"write:waitpoints:{token_id}"], "1h")
                answer = await http.post(
                    f"/api/v1/waitpoints/tokens/{token_id}/complete", json={"data": {"ok": 1}}, headers=bearer(access)
                )
                assert answer.status_code == 200 and answer.json() == {"success": True}
            run = await until_final(handle.id)
            assert run.output == {"ok": True, "output": {"ok": 1}}
    finally:
        await worker.stop()
        await worker_bridge.stop()


async def test_a_completion_after_redis_restarted_reaches_the_waiting_task() -> None:
    """Redis keeping its data (AOF, fsync always) restarts while a task waits on a token: the waiter's
    subscription comes back (and re-reads the token), the token is still there, the completion lands."""
    redis_server = start_redis_server(persistent=True)
    settings = suite_settings(redis_url=redis_server.url, key_prefix=unique("wp-restart"))
    server, task = await start_server(settings)
    try:
        handle = await tasks.trigger("await-token", {"timeout": "10m"})
        token_id = await waiting_token(handle.id)
        resynced = asyncio.Event()  # the broker signals it once reconnected and resubscribed

        def on_message(channel: str, message: Message | None) -> None:
            if message is None:
                resynced.set()

        await server.app_bridge.hub.attach(waitpoint_channel(token_id), on_message)
        await asyncio.to_thread(redis_server.restart)
        async with asyncio.timeout(30):
            await resynced.wait()
        assert (await wait.retrieve_token(token_id)).status == "WAITING"
        await wait.complete_token(token_id, {"after": "restart"})
        assert (await until_final(handle.id)).output == {"ok": True, "output": {"after": "restart"}}
    finally:
        await stop_server(server, task)
        redis_server.stop()


async def test_a_completion_racing_the_deadline_has_one_outcome(server: RunningServer) -> None:
    """Completions sent around the deadline while the timer fires: whichever result was stored first
    is what the token says and what the task got."""
    for _ in range(5):
        # Long enough for the run to reach its wait first on a busy machine; the race is at the deadline.
        created = await wait.create_token(timeout="1s")
        handle = await tasks.trigger("await-token", {"tokenId": created.id})
        await waiting_token(handle.id)
        deadline = (await wait.retrieve_token(created)).timeout_at
        await pass_deadline(deadline - timedelta(milliseconds=60))
        for _ in range(8):  # a completion every ~15 ms across the deadline
            await wait.complete_token(created, "in time")
            await asyncio.sleep(0.015)
        stored = await wait.retrieve_token(created)
        run = await until_final(handle.id)
        if stored.status == "COMPLETED":
            assert stored.output == "in time" and run.output == {"ok": True, "output": "in time"}
        else:
            assert stored.status == "TIMED_OUT" and run.output["ok"] is False


# the official HTTP routes


async def test_http_create_complete_retrieve(server: RunningServer, http: httpx.AsyncClient) -> None:
    created = await http.post(
        "/api/v1/waitpoints/tokens",
        json={"timeout": "10m", "idempotencyKey": unique("k"), "tags": "doc:1"},
        headers=secret_headers(),
    )
    assert created.status_code == 200, created.text
    body = created.json()
    token_id = body["id"]
    assert body["isCached"] is False and body["url"].startswith(f"{server.url}/api/v1/waitpoints/tokens/{token_id}/")
    access = created.headers["x-trigger-jwt"]
    assert authenticate(SECRET_KEY, access).scopes == (f"write:waitpoints:{token_id}",)

    waiting = (await http.get(f"/api/v1/waitpoints/tokens/{token_id}", headers=bearer(access))).json()
    assert waiting["status"] == "WAITING" and waiting["tags"] == ["doc:1"] and "output" not in waiting
    assert "timeoutAt" in waiting and "completedAt" not in waiting

    answer = await http.post(
        f"/api/v1/waitpoints/tokens/{token_id}/complete", json={"data": {"approved": True}}, headers=bearer(access)
    )
    assert answer.status_code == 200 and answer.json() == {"success": True}
    done = (await http.get(f"/api/v1/waitpoints/tokens/{token_id}", headers=secret_headers())).json()
    assert done["status"] == "COMPLETED" and done["outputIsError"] is False
    assert orjson.loads(done["output"]) == {"approved": True} and done["outputType"] == "application/json"


async def test_http_refusals(server: RunningServer, http: httpx.AsyncClient) -> None:
    created = (await http.post("/api/v1/waitpoints/tokens", json={}, headers=secret_headers())).json()
    token_id = created["id"]
    path = f"/api/v1/waitpoints/tokens/{token_id}"
    own = bearer(token(f"write:waitpoints:{token_id}"))

    no_data = await http.post(f"{path}/complete", json={"output": {"approved": True}}, headers=own)
    assert no_data.status_code == 400 and '{"data": <the output>}' in no_data.json()["error"]
    assert (await http.get(path, headers=own)).json()["status"] == "WAITING"
    assert (await http.post(f"{path}/complete", content=b"[1]", headers=own)).status_code == 400
    other = bearer(token("write:waitpoints:waitpoint_other"))
    assert (await http.post(f"{path}/complete", json={"data": 1}, headers=other)).status_code == 403
    assert (await http.get(path, headers=other)).status_code == 403
    assert (await http.post(f"{path}/complete", json={"data": 1}, headers=bearer("nope"))).status_code == 401
    too_big = await http.post(f"{path}/complete", json={"data": "x" * MIB}, headers=own)
    assert too_big.status_code == 413
    assert (await http.get(path, headers=own)).json()["status"] == "WAITING"
    missing = "waitpoint_doesnotexist"
    assert (await http.post(f"/api/v1/waitpoints/tokens/{missing}/complete", json={"data": 1})).status_code == 401
    assert (
        await http.post(f"/api/v1/waitpoints/tokens/{missing}/complete", json={"data": 1}, headers=secret_headers())
    ).status_code == 404

    for bad_value in ({"timeout": "soon"}, {"timeout": "999999999w"}, {"tags": [f"t{i}" for i in range(11)]}):
        refused = await http.post("/api/v1/waitpoints/tokens", json=bad_value, headers=secret_headers())
        assert refused.status_code == 422, refused.text
    for bad_type in ({"timeout": 5}, {"timeout": True}, {"tags": 5}, {"tags": [1]}, {"idempotencyKey": "k" * 2049}):
        refused = await http.post("/api/v1/waitpoints/tokens", json=bad_type, headers=secret_headers())
        assert refused.status_code == 400, refused.text
    long_ago = await http.post(
        "/api/v1/waitpoints/tokens", json={"timeout": "0001-01-01T00:00:00+14:00"}, headers=secret_headers()
    )
    assert long_ago.status_code == 200  # a past date: the token times out at once
    past = await http.get(f"/api/v1/waitpoints/tokens/{long_ago.json()['id']}", headers=secret_headers())
    assert past.json()["status"] == "TIMED_OUT"
    far = {"timeout": "9999-12-31T23:59:59-14:00"}
    assert (await http.post("/api/v1/waitpoints/tokens", json=far, headers=secret_headers())).status_code == 422
    assert (
        await http.post("/api/v1/waitpoints/tokens", json={"idempotencyKey": 5}, headers=secret_headers())
    ).status_code == 400
    assert (await http.post("/api/v1/waitpoints/tokens", json={}, headers=own)).status_code == 403
    oversized = {"tags": ["t"], "idempotencyKey": "k" * (10 * 1024)}  # the create body is at most 10 KiB
    assert (await http.post("/api/v1/waitpoints/tokens", json=oversized, headers=secret_headers())).status_code == 413


async def test_http_create_accepts_an_iso_date_timeout(server: RunningServer, http: httpx.AsyncClient) -> None:
    deadline = (datetime.now(UTC) + timedelta(minutes=5)).replace(microsecond=0)
    created = await http.post(
        "/api/v1/waitpoints/tokens",
        json={"timeout": deadline.isoformat().replace("+00:00", "Z")},
        headers=secret_headers(),
    )
    assert created.status_code == 200, created.text
    retrieved = (await http.get(f"/api/v1/waitpoints/tokens/{created.json()['id']}", headers=secret_headers())).json()
    assert datetime.fromisoformat(retrieved["timeoutAt"]) == deadline


async def test_callback_url_completes_with_the_raw_body(server: RunningServer, http: httpx.AsyncClient) -> None:
    handle = await tasks.trigger("await-token", {})
    token_id = await waiting_token(handle.id)
    url = (await wait.retrieve_token(token_id)).url
    signature = url.rsplit("/", 1)[1]
    wrong = url[: -len(signature)] + "0" * len(signature)
    assert (await http.post(wrong, json={"approved": True})).status_code == 401
    assert (await http.post(url, content=b"not json", headers={"content-type": "application/json"})).status_code == 400

    async def no_length() -> Any:
        yield b'{"approved": true}'

    chunked = await http.post(url, content=no_length())
    assert chunked.status_code == 411
    assert (await http.post(url, content=b"x" * (3 * MIB + 1))).status_code == 413
    answer = await http.post(url, json={"approved": True, "source": "webhook"})
    assert answer.status_code == 200 and answer.json() == {"success": True}
    assert (await until_final(handle.id)).output == {"ok": True, "output": {"approved": True, "source": "webhook"}}

    missing = "waitpoint_doesnotexist"
    signed = f"/api/v1/waitpoints/tokens/{missing}/callback/{callback_signature(SECRET_KEY, missing)}"
    assert (await http.post(signed, json={})).status_code == 404
    assert (await http.get(url)).status_code == 405
    assert (await http.post(url.rsplit("/", 1)[0] + "/%C3%A9", json={})).status_code == 401  # not even ASCII


async def test_an_empty_complete_body_completes_with_null(server: RunningServer, http: httpx.AsyncClient) -> None:
    """`{}` is what the official clients send for `complete(undefined)`."""
    created = await wait.create_token()
    own = bearer(created.public_access_token)
    answer = await http.post(f"/api/v1/waitpoints/tokens/{created.id}/complete", json={}, headers=own)
    assert answer.status_code == 200
    done = await wait.retrieve_token(created)
    assert done.status == "COMPLETED" and done.output is None


# the WebSocket `complete` frame


async def test_websocket_complete_frame(server: RunningServer) -> None:
    handle = await tasks.trigger("await-token", {})
    token_id = await waiting_token(handle.id)
    own = token(f"write:waitpoints:{token_id}")
    frame = {"type": "complete", "tokenId": token_id, "token": own}
    async with connect(server.ws_url) as ws:
        await ws.send({**frame, "id": "c0", "data": 1, "token": token("read:runs")})
        await ws.expect(error("forbidden", "c0"))
        await ws.send({**frame, "id": "c1"})  # no data
        await ws.expect(error("invalid_request", "c1"))
        await ws.send({**frame, "id": "c2", "tokenId": "waitpoint_nope", "data": 1, "token": SECRET_KEY})
        await ws.expect(error("not_found", "c2"))
        await ws.send({**frame, "id": "c3", "data": "x" * MIB})
        await ws.expect(error("payload_too_large", "c3"))
        await ws.send({**frame, "id": "c4", "data": {"by": "ws"}})
        assert await ws.expect(of_type("ack", "c4")) == {"type": "ack", "id": "c4"}
        await ws.send({**frame, "id": "c5", "data": {"by": "again"}})  # a doubled click: acknowledged too
        await ws.expect(of_type("ack", "c5"))
    assert (await until_final(handle.id)).output == {"ok": True, "output": {"by": "ws"}}


# the official Node SDK and hook


async def test_official_sdk_and_use_wait_token(server: RunningServer) -> None:
    created = await run_script(server, "wait-token.mjs", "create", '{"timeout": "10m", "tags": ["node"]}')
    assert created.ok, created.explain()
    node_token = created["token"]
    assert node_token["id"].startswith("waitpoint_") and node_token["isCached"] is False
    assert authenticate(SECRET_KEY, node_token["publicAccessToken"]).scopes == (f"write:waitpoints:{node_token['id']}",)

    completed = await run_script(
        server, "wait-token.mjs", "hook", node_token["id"], '{"approved": true}', node_token["publicAccessToken"]
    )
    assert completed.ok, completed.explain()
    assert completed["states"][-1] == {"isCompleted": True, "isLoading": False, "isReady": True}
    retrieved = await run_script(server, "wait-token.mjs", "retrieve", node_token["id"])
    assert retrieved.ok, retrieved.explain()
    assert retrieved["token"]["status"] == "COMPLETED" and retrieved["token"]["output"] == {"approved": True}

    handle = await tasks.trigger("await-token", {})
    token_id = await waiting_token(handle.id)
    by_sdk = await run_script(server, "wait-token.mjs", "complete", token_id, '{"by": "node"}')
    assert by_sdk.ok and by_sdk["result"] == {"success": True}, by_sdk.explain()
    assert (await until_final(handle.id)).output == {"ok": True, "output": {"by": "node"}}

    timed_out = await wait.create_token(timeout="0.2s")
    await pass_deadline((await wait.retrieve_token(timed_out)).timeout_at)
    late = await run_script(server, "wait-token.mjs", "retrieve", timed_out.id)
    assert late.ok and late["token"]["status"] == "TIMED_OUT", late.explain()
    assert late["token"]["error"]["name"] == "WaitpointTimeoutError"
    missing = await run_script(server, "wait-token.mjs", "complete", "waitpoint_doesnotexist", "1")
    assert not missing.ok and missing["error"]["status"] == 404
