"""The official HTTP routes, driven directly with httpx on both backends.

What the official clients (and anyone with curl) rely on: authentication and scopes per route,
the Electric run-feed protocol (headers, row encoding, held live polls, replay, 409, limits),
trigger and batch bodies, retrieve/cancel, CORS, health, and never a 5xx for client input.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import orjson
import pytest

from bridge import runs
from bridge.config import Settings
from bridge.models import Run, RunStatus, now_ms
from bridge.runtime.access import AUDIENCE, ISSUER, create_public_token
from bridge.runtime.engine import MAX_IDEMPOTENCY_KEY_LENGTH
from bridge.server.official.electric import COLUMNS
from bridge.server.official.feeds import FeedSessions
from tests.conftest import RunningServer, start_server, stop_server
from tests.support.helpers import bearer, until_final
from tests.support.tasks import gates

pytestmark = pytest.mark.cluster

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$")  # ISO 8601 without a zone
UP_TO_DATE = {"headers": {"control": "up-to-date"}}
OFFICIAL_403 = {"code": "unauthorized", "param": "access_token", "type": "authorization"}


# ---------------------------------------------------------------------------------------------
# helpers


def token(server: RunningServer, *scopes: str, expiration: Any = "15m", one_time: bool = False) -> str:
    return create_public_token(server.settings.secret_key, list(scopes), expiration, one_time=one_time)


def secret(server: RunningServer) -> dict[str, str]:
    return bearer(server.settings.secret_key)


async def trigger(http: httpx.AsyncClient, server: RunningServer, task: str, payload: Any, **options: Any) -> str:
    response = await http.post(
        f"/api/v1/tasks/{task}/trigger", json={"payload": payload, "options": options}, headers=secret(server)
    )
    assert response.status_code == 200, response.text
    run_id: str = response.json()["id"]
    return run_id


async def executing_gate(http: httpx.AsyncClient, server: RunningServer) -> tuple[str, str]:
    """A `wait-for-gate` run that is executing and blocked on its gate: (run id, gate name)."""
    gate = uuid.uuid4().hex
    gates[gate] = asyncio.Event()
    run_id = await trigger(http, server, "wait-for-gate", {"gate": gate})
    async with asyncio.timeout(20):
        async for run in runs.subscribe_to_run(run_id):
            if run.metadata.get("waiting"):
                break
    return run_id, gate


async def feed(http: httpx.AsyncClient, path: str, auth: dict[str, str], **params: str) -> httpx.Response:
    return await http.get(path, params={"log": "full", "offset": "-1", **params}, headers=auth)


def rows(response: httpx.Response) -> list[dict[str, Any]]:
    body = response.json()
    assert body[-1] == UP_TO_DATE, body
    return [message for message in body if "key" in message]


def feed_sessions(server: RunningServer) -> FeedSessions:
    sessions: FeedSessions = server.uvicorn.config.app.state.feed_sessions
    return sessions


@pytest.fixture
async def custom_server(backend_settings: Settings) -> AsyncIterator[Any]:
    """`await custom_server(**limits)`: a server on the same backend with some limits changed."""
    started: list[tuple[RunningServer, asyncio.Task[None]]] = []

    async def start(**limits: Any) -> RunningServer:
        settings = replace(backend_settings, limits=replace(backend_settings.limits, **limits))
        running, task = await start_server(settings)
        started.append((running, task))
        return running

    yield start
    for running, task in started:
        await stop_server(running, task)


def assert_json_error(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"], body
    return body


# ---------------------------------------------------------------------------------------------
# authentication and scopes


def _routes(run_id: str, batch_id: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        ("GET", "/realtime/v1/runs", {"params": {"tags": "t", "offset": "-1"}}),
        ("GET", f"/realtime/v1/runs/{run_id}", {"params": {"offset": "-1"}}),
        ("GET", f"/realtime/v1/batches/{batch_id}", {"params": {"offset": "-1"}}),
        ("POST", "/api/v1/tasks/echo/trigger", {"json": {"payload": {"a": 1}}}),
        ("POST", "/api/v3/batches", {"json": {"runCount": 1, "taskIdentifiers": ["echo"]}}),
        ("POST", f"/api/v3/batches/{batch_id}/items", {"content": b'{"index":0,"task":"echo","payload":1}\n'}),
        ("GET", f"/api/v3/runs/{run_id}", {}),
        ("POST", f"/api/v2/runs/{run_id}/cancel", {}),
        ("POST", f"/api/v1/runs/{run_id}/reschedule", {"json": {"delay": "1h"}}),
        ("GET", f"/api/v1/runs/{run_id}/packets/payload", {}),
        ("PUT", "/api/v2/packets/payload.json", {}),
        ("POST", "/api/v1/auth/jwt/claims", {}),
    ]


def _bad_credentials(server: RunningServer, run_id: str) -> Iterator[tuple[str, dict[str, str]]]:
    yield "no header", {}
    yield "empty bearer", {"Authorization": "Bearer"}
    yield "not bearer", {"Authorization": f"Basic {server.settings.secret_key}"}
    yield "garbage", bearer("not-a-jwt")
    yield "expired", bearer(token(server, "admin", expiration=datetime.now(UTC) - timedelta(minutes=5)))
    claims = {"iss": ISSUER, "aud": AUDIENCE, "pub": True, "scopes": ["admin"], "exp": int(time.time()) + 600}
    yield "wrong signature", bearer(jwt.encode(claims, "some-other-secret-key-0123456789", algorithm="HS256"))
    yield "not public", bearer(jwt.encode({**claims, "pub": False}, server.settings.secret_key, algorithm="HS256"))
    yield "wrong audience", bearer(jwt.encode({**claims, "aud": "x"}, server.settings.secret_key, algorithm="HS256"))
    yield (
        "no expiry",
        bearer(jwt.encode({"aud": AUDIENCE, "pub": True, "scopes": ["admin"]}, server.settings.secret_key)),
    )


async def test_every_route_refuses_missing_and_invalid_tokens_with_401_json(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    run_id = await trigger(http, server, "echo", {"a": 1})
    batch_id = "batch_" + uuid.uuid4().hex[:24]
    for name, headers in _bad_credentials(server, run_id):
        for method, path, kwargs in _routes(run_id, batch_id):
            response = await http.request(method, path, headers=headers, **kwargs)
            assert_json_error(response, 401)
            assert response.status_code == 401, (name, method, path)
    expired = await http.get(
        f"/api/v3/runs/{run_id}", headers=bearer(token(server, "admin", expiration=datetime.now(UTC) - timedelta(1)))
    )
    assert "expired" in expired.json()["error"]


async def test_run_routes_need_a_scope_for_that_run(server: RunningServer, http: httpx.AsyncClient) -> None:
    run_a = await trigger(http, server, "echo", {"a": 1}, tags=["tag-a"])
    run_b = await trigger(http, server, "echo", {"b": 1}, tags=["tag-b"])
    await until_final(run_a)
    await until_final(run_b)
    for_a = bearer(token(server, f"read:runs:{run_a}"))
    for path in (f"/realtime/v1/runs/{run_b}", f"/api/v3/runs/{run_b}"):
        body = assert_json_error(await feed(http, path, for_a), 403)
        assert body["error"].startswith("Unauthorized")
        assert {k: body[k] for k in OFFICIAL_403} == OFFICIAL_403
    # What does read a run: the run, its task, any of its tags, a type-level or admin scope.
    for scope in (f"read:runs:{run_b}", "read:tasks:echo", "read:tags:tag-b", "read:runs", "read:all", "admin"):
        for path in (f"/realtime/v1/runs/{run_b}", f"/api/v3/runs/{run_b}"):
            response = await feed(http, path, bearer(token(server, scope)))
            assert response.status_code == 200, (scope, path, response.text)
    for scope in ("read:tags:tag-a", "read:tasks:fail", "write:inputStreams:" + run_b, "read:batch:x"):
        response = await feed(http, f"/realtime/v1/runs/{run_b}", bearer(token(server, scope)))
        assert response.status_code == 403, scope


async def test_tag_and_batch_feeds_need_their_scopes(server: RunningServer, http: httpx.AsyncClient) -> None:
    path = "/realtime/v1/runs"
    for scope, status in [
        ("read:tags:wanted", 200),
        ("read:tags", 200),
        ("read:runs", 200),
        ("read:tags:other", 403),
        ("read:runs:run_x", 403),
        ("read:batch:batch_x", 403),
    ]:
        response = await feed(http, path, bearer(token(server, scope)), tags="wanted")
        assert response.status_code == status, (scope, response.text)
    # With several tags, a read:tags:<t> scope for one of them is enough.
    assert (await feed(http, path, bearer(token(server, "read:tags:b")), tags="a,b")).status_code == 200

    batch = "batch_" + uuid.uuid4().hex[:24]
    for scope, status in [
        (f"read:batch:{batch}", 200),
        ("read:runs", 200),
        ("read:batch:batch_other", 403),
        (f"read:runs:{batch}", 403),
        ("read:tags", 403),
    ]:
        response = await feed(http, f"/realtime/v1/batches/{batch}", bearer(token(server, scope)))
        assert response.status_code == status, (scope, response.text)


async def test_trigger_cancel_and_claims_scopes(server: RunningServer, http: httpx.AsyncClient) -> None:
    body = {"payload": {"a": 1}}
    for scope, status in [
        ("trigger:tasks:echo", 200),
        ("trigger:tasks", 200),
        ("write:tasks:echo", 200),
        ("trigger:tasks:fail", 403),
        ("read:tasks:echo", 403),
        ("batchTrigger:tasks:echo", 403),
    ]:
        response = await http.post("/api/v1/tasks/echo/trigger", json=body, headers=bearer(token(server, scope)))
        assert response.status_code == status, (scope, response.text)

    run_id, gate = await executing_gate(http, server)
    for scope in (f"read:runs:{run_id}", "write:runs:run_other", "write:tasks:echo", "trigger:tasks:wait-for-gate"):
        response = await http.post(f"/api/v2/runs/{run_id}/cancel", headers=bearer(token(server, scope)))
        assert_json_error(response, 403)
    response = await http.post(f"/api/v2/runs/{run_id}/cancel", headers=bearer(token(server, f"write:runs:{run_id}")))
    assert response.status_code == 200 and response.json() == {"id": run_id}
    assert (await until_final(run_id)).status is RunStatus.CANCELED
    gates[gate].set()
    other_id, other_gate = await executing_gate(http, server)
    response = await http.post(
        f"/api/v2/runs/{other_id}/cancel", headers=bearer(token(server, "write:tasks:wait-for-gate"))
    )
    assert response.status_code == 200
    assert (await until_final(other_id)).status is RunStatus.CANCELED
    gates[other_gate].set()
    assert_json_error(await http.post("/api/v2/runs/run_missing/cancel", headers=secret(server)), 404)

    claims = await http.post("/api/v1/auth/jwt/claims", headers=secret(server))
    assert claims.status_code == 200 and claims.json() == {"sub": "bridge", "pub": True}
    for scope in ("admin", "write:all"):
        body_401 = assert_json_error(
            await http.post("/api/v1/auth/jwt/claims", headers=bearer(token(server, scope))), 401
        )
        assert body_401["error"] == "Invalid or Missing API key"


# ---------------------------------------------------------------------------------------------
# the Electric run feed


async def test_feed_first_answer_headers_and_row_encoding(server: RunningServer, http: httpx.AsyncClient) -> None:
    tags = ['q"uote', "back\\slash", "plain"]
    payload = {"text": "x", "n": 1.5}
    ok_id = await trigger(http, server, "echo", payload, tags=tags, metadata={"m": [1, 2]}, test=True)
    failed_id = await trigger(http, server, "fail", '"boom"')
    await until_final(ok_id)
    await until_final(failed_id)

    response = await feed(http, f"/realtime/v1/runs/{ok_id}", secret(server))
    assert response.status_code == 200
    headers = response.headers
    assert headers["content-type"].startswith("application/json")
    assert headers["cache-control"] == "no-store"
    assert headers["electric-offset"] == "1_0"
    assert headers["electric-handle"]
    assert "electric-up-to-date" in headers
    assert "electric-cursor" not in headers  # only live answers carry it
    schema = orjson.loads(headers["electric-schema"])
    assert list(schema) == list(COLUMNS)
    assert schema["runTags"] == {"type": "text", "dims": 1} and schema["realtimeStreams"] == {"type": "text", "dims": 1}
    assert schema["error"] == {"type": "jsonb"} and schema["isTest"] == {"type": "bool"}
    assert schema["number"] == {"type": "int4"} and schema["costInCents"] == {"type": "float8"}
    assert schema["createdAt"] == {"type": "timestamp"}

    [row] = rows(response)
    assert row["key"] == f'"public"."TaskRun"/"{ok_id}"'
    assert row["headers"] == {"operation": "insert"}
    value = row["value"]
    assert set(value) == set(COLUMNS)
    assert all(v is None or isinstance(v, str) for v in value.values()), value
    assert value["id"] == value["friendlyId"] == ok_id and value["taskIdentifier"] == "echo"
    assert value["status"] == "COMPLETED_SUCCESSFULLY"
    for column in ("createdAt", "updatedAt", "startedAt", "completedAt", "queuedAt"):
        assert TIMESTAMP.match(value[column]), (column, value[column])
    assert value["delayUntil"] is None and value["expiredAt"] is None
    assert value["isTest"] == "t"
    assert value["number"].isdigit() and value["usageDurationMs"].isdigit()
    assert value["costInCents"] == "0" and value["baseCostInCents"] == "0"
    assert value["runTags"] == '{"q\\"uote","back\\\\slash","plain"}'
    assert value["realtimeStreams"] == "{}"
    assert orjson.loads(value["payload"]) == payload and value["payloadType"] == "application/json"
    assert orjson.loads(value["output"]) == {"echo": payload} and value["outputType"] == "application/json"
    assert orjson.loads(value["metadata"]) == {"m": [1, 2]} and value["metadataType"] == "application/json"
    assert value["error"] is None

    failed = rows(await feed(http, f"/realtime/v1/runs/{failed_id}", secret(server)))[0]["value"]
    assert failed["status"] == "COMPLETED_WITH_ERRORS" and failed["isTest"] == "f" and failed["runTags"] == "{}"
    assert failed["output"] is None
    error = orjson.loads(failed["error"])
    assert error["type"] == "BUILT_IN_ERROR"
    assert error["name"] == "ValueError" and error["message"] == "failed on purpose: boom"
    assert isinstance(error["stackTrace"], str) and "ValueError" in error["stackTrace"]

    run_id, gate = await executing_gate(http, server)
    executing = rows(await feed(http, f"/realtime/v1/runs/{run_id}", secret(server)))[0]["value"]
    assert executing["status"] == "EXECUTING" and executing["completedAt"] is None and executing["output"] is None
    await http.post(f"/api/v2/runs/{run_id}/cancel", headers=secret(server))
    await until_final(run_id)
    canceled = rows(await feed(http, f"/realtime/v1/runs/{run_id}", secret(server)))[0]["value"]
    assert canceled["status"] == "CANCELED" and TIMESTAMP.match(canceled["completedAt"])
    gates[gate].set()
    assert_json_error(await feed(http, "/realtime/v1/runs/run_missing", secret(server)), 404)


async def test_live_poll_is_held_until_the_run_changes_and_replays_a_missed_answer(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    run_id, gate = await executing_gate(http, server)
    auth = bearer(token(server, f"read:runs:{run_id}"))
    path = f"/realtime/v1/runs/{run_id}"
    first = await feed(http, path, auth)
    handle = first.headers["electric-handle"]
    assert rows(first)[0]["value"]["status"] == "EXECUTING"

    live = {"handle": handle, "offset": "1_0", "live": "true", "cursor": ""}
    poll = asyncio.create_task(feed(http, path, auth, **live))
    done, _ = await asyncio.wait({poll}, timeout=0.5)
    assert not done, "a live poll with no change must be held"
    gates[gate].set()
    answer = await poll
    assert answer.status_code == 200
    assert answer.headers["electric-offset"] == "2_0" and answer.headers["electric-handle"] == handle
    assert answer.headers["electric-cursor"]
    assert "electric-schema" not in answer.headers
    [row] = rows(answer)
    assert row["headers"] == {"operation": "update"}
    assert row["value"]["status"] == "COMPLETED_SUCCESSFULLY" and orjson.loads(row["value"]["output"]) == run_id

    # The client never got that answer and asks again from the previous offset: same rows, at once.
    replay = await feed(http, path, auth, **live)
    assert replay.status_code == 200 and replay.headers["electric-offset"] == "2_0"
    assert [r["value"]["status"] for r in rows(replay)] == ["COMPLETED_SUCCESSFULLY"]

    # An offset the session never gave out: start over.
    gone = await feed(http, path, auth, **{**live, "offset": "7_0"})
    assert gone.status_code == 409


async def test_live_poll_without_change_ends_after_the_hold(custom_server: Any) -> None:
    server: RunningServer = await custom_server(live_poll_hold_seconds=0.3)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        run_id = await trigger(client, server, "echo", {"a": 1})
        await until_final(run_id)
        path = f"/realtime/v1/runs/{run_id}"
        first = await feed(client, path, secret(server))
        handle = first.headers["electric-handle"]
        started = time.monotonic()
        answer = await feed(client, path, secret(server), handle=handle, offset="1_0", live="true", cursor="")
        assert time.monotonic() - started >= 0.25
        assert answer.status_code == 200 and answer.json() == [UP_TO_DATE]
        assert answer.headers["electric-offset"] == "1_0" and answer.headers["electric-handle"] == handle
        assert answer.headers["electric-cursor"].isdigit() and "electric-up-to-date" in answer.headers
        # The session is still there: the next poll is answered the same way, not with a 409.
        again = await feed(client, path, secret(server), handle=handle, offset="1_0", live="true", cursor="1")
        assert again.status_code == 200


async def test_unknown_handle_gets_409_with_a_json_array(server: RunningServer, http: httpx.AsyncClient) -> None:
    run_id = await trigger(http, server, "echo", {"a": 1})
    for path in (f"/realtime/v1/runs/{run_id}", "/realtime/v1/batches/batch_x"):
        response = await feed(http, path, secret(server), handle="feed_unknown", offset="3_0", live="true")
        assert response.status_code == 409
        assert response.headers["content-type"].startswith("application/json")
        body = response.json()
        assert isinstance(body, list) and {"headers": {"control": "must-refetch"}} in body
        assert response.headers["electric-handle"] and response.headers["electric-handle"] != "feed_unknown"
    # A handle of another feed is unknown to this one.
    other = await trigger(http, server, "echo", {"b": 1})
    handle = (await feed(http, f"/realtime/v1/runs/{other}", secret(server))).headers["electric-handle"]
    mixed = await feed(http, f"/realtime/v1/runs/{run_id}", secret(server), handle=handle, offset="1_0")
    assert mixed.status_code == 409


async def test_skip_columns_never_drops_identity_or_status(server: RunningServer, http: httpx.AsyncClient) -> None:
    run_id = await trigger(http, server, "echo", {"big": "x" * 100})
    await until_final(run_id)
    response = await feed(
        http, f"/realtime/v1/runs/{run_id}", secret(server), skipColumns="payload,output,id,status,bogus"
    )
    value = rows(response)[0]["value"]
    schema = orjson.loads(response.headers["electric-schema"])
    assert "payload" not in value and "output" not in value
    assert "payload" not in schema and "output" not in schema
    for kept in ("id", "taskIdentifier", "friendlyId", "status", "createdAt", "metadata"):
        assert kept in value and kept in schema
    assert set(value) == set(schema)


async def test_tag_feed_with_percent_encoded_tags_matches_runs_with_all_of_them(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    both = await trigger(http, server, "echo", 1, tags=["a", "b", "c"])
    await trigger(http, server, "echo", 2, tags=["a"])
    await trigger(http, server, "echo", 3, tags=["b"])
    response = await http.get(
        f"{server.url}/realtime/v1/runs?tags=a%2Cb&offset=-1&log=full", headers=bearer(token(server, "read:tags:a"))
    )
    assert response.status_code == 200
    assert [row["value"]["id"] for row in rows(response)] == [both]


async def test_tag_feed_created_at_window(server: RunningServer, http: httpx.AsyncClient) -> None:
    broker = server.app_bridge.broker
    hour = 3600 * 1000
    old, _ = await broker.insert_run(
        Run(id="run_" + uuid.uuid4().hex[:24], task_identifier="echo", tags=["w"], created_at=now_ms() - 2 * hour),
        None,
        0,
    )
    recent = await trigger(http, server, "echo", 1, tags=["w"])

    async def ids(created_at: str | None) -> list[str]:
        params = {"tags": "w"} | ({"createdAt": created_at} if created_at else {})
        response = await feed(http, "/realtime/v1/runs", secret(server), **params)
        assert response.status_code == 200, response.text
        return [row["value"]["id"] for row in rows(response)]

    assert await ids("1h") == [recent]
    assert set(await ids("3h")) == {recent, old.id}
    assert set(await ids(None)) == {recent, old.id}  # the default window is a day
    assert_json_error(await feed(http, "/realtime/v1/runs", secret(server), tags="w", createdAt="yesterday"), 400)
    assert_json_error(await feed(http, "/realtime/v1/runs", secret(server)), 400)  # tags are required


async def test_tag_feed_holds_at_most_the_cap(custom_server: Any) -> None:
    server: RunningServer = await custom_server(max_tag_feed_runs=2)
    broker = server.app_bridge.broker
    base = now_ms() - 60_000
    inserted = []
    for i in range(3):
        run, _ = await broker.insert_run(
            Run(id=f"run_cap{i}_{uuid.uuid4().hex[:16]}", task_identifier="echo", tags=["capped"], created_at=base + i),
            None,
            0,
        )
        inserted.append(run.id)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        response = await feed(client, "/realtime/v1/runs", secret(server), tags="capped")
    assert response.status_code == 200
    assert {row["value"]["id"] for row in rows(response)} == set(inserted[1:])  # the newest two


async def test_feed_sessions_are_bounded_and_swept_when_idle(
    custom_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: RunningServer = await custom_server(max_feed_sessions=2, feed_session_idle_seconds=0.3)
    hub = server.app_bridge.hub
    detached: asyncio.Queue[str] = asyncio.Queue()
    real_detach = hub.detach

    async def detach(channel: str, listener: Any) -> None:
        await real_detach(channel, listener)
        detached.put_nowait(channel)

    monkeypatch.setattr(hub, "detach", detach)  # a swept session's cursor detaches from its run channel
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        run_id = await trigger(client, server, "echo", 1)
        path = f"/realtime/v1/runs/{run_id}"
        handles = [(await feed(client, path, secret(server))).headers["electric-handle"] for _ in range(2)]
        too_many = await feed(client, path, secret(server))
        assert_json_error(too_many, 429)

        async with asyncio.timeout(10):
            swept = [await detached.get(), await detached.get()]
        assert swept == [f"run:{run_id}"] * 2
        assert feed_sessions(server).count == 0
        expired = await feed(client, path, secret(server), handle=handles[0], offset="1_0", live="true")
        assert expired.status_code == 409 and {"headers": {"control": "must-refetch"}} in expired.json()
        assert (await feed(client, path, secret(server))).status_code == 200  # room again


async def test_concurrent_opens_never_exceed_the_session_bound(custom_server: Any) -> None:
    server: RunningServer = await custom_server(max_feed_sessions=2)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        run_id = await trigger(client, server, "echo", 1)
        answers = await asyncio.gather(*(feed(client, f"/realtime/v1/runs/{run_id}", secret(server)) for _ in range(8)))
    assert sorted(a.status_code for a in answers) == [200, 200] + [429] * 6
    assert feed_sessions(server).count == 2


async def test_sweeper_survives_a_failing_close(custom_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server: RunningServer = await custom_server(feed_session_idle_seconds=0.3)
    hub = server.app_bridge.hub
    real_detach = hub.detach
    calls: asyncio.Queue[str] = asyncio.Queue()

    async def detach(channel: str, listener: Any) -> None:
        calls.put_nowait(channel)
        if calls.qsize() == 1:
            raise ConnectionError("backend went away for a moment")
        await real_detach(channel, listener)

    monkeypatch.setattr(hub, "detach", detach)
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        run_id = await trigger(client, server, "echo", 1)
        for _ in range(2):
            assert (await feed(client, f"/realtime/v1/runs/{run_id}", secret(server))).status_code == 200
        async with asyncio.timeout(10):
            assert [await calls.get(), await calls.get()] == [f"run:{run_id}"] * 2  # the second is still swept
        assert feed_sessions(server).count == 0
        # ...and later sessions too: the sweeper is still running.
        assert (await feed(client, f"/realtime/v1/runs/{run_id}", secret(server))).status_code == 200
        async with asyncio.timeout(10):
            assert await calls.get() == f"run:{run_id}"


# ---------------------------------------------------------------------------------------------
# trigger


async def _trigger_raw(
    http: httpx.AsyncClient, server: RunningServer, body: Any, task: str = "echo", **kwargs: Any
) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = {**secret(server), "Content-Type": "application/json", **kwargs.pop("headers", {})}
    return await http.post(f"/api/v1/tasks/{task}/trigger", content=content, headers=headers, **kwargs)


async def test_trigger_decodes_every_payload_type(server: RunningServer, http: httpx.AsyncClient) -> None:
    cases: list[tuple[dict[str, Any], Any]] = [
        (
            {
                "payload": '{"json":{"a":1,"when":"2020-01-01T00:00:00.000Z"},"meta":{"values":{"when":["Date"]}}}',
                "options": {"payloadType": "application/super+json"},
            },
            {"a": 1, "when": "2020-01-01T00:00:00.000Z"},
        ),
        ({"payload": '{"json":null}', "options": {"payloadType": "application/super+json"}}, None),
        ({"payload": "hello, world", "options": {"payloadType": "text/plain"}}, "hello, world"),
        ({"payload": '{"x":[1,2]}', "options": {"payloadType": "application/json"}}, {"x": [1, 2]}),
        ({"payload": '"quoted"'}, "quoted"),  # a string without payloadType is JSON text, like the official API
        ({"payload": {"plain": True}}, {"plain": True}),
        ({"payload": 42}, 42),
        ({"payload": [1, "two"]}, [1, "two"]),
        ({}, None),
    ]
    for body, expected in cases:
        response = await _trigger_raw(http, server, body)
        assert response.status_code == 200, (body, response.text)
        run = await until_final(response.json()["id"])
        assert run.payload == expected and run.output == {"echo": expected}, body


async def test_trigger_refuses_bad_bodies_with_400(server: RunningServer, http: httpx.AsyncClient) -> None:
    bad: list[Any] = [
        b"{not json",
        b"\xff\xfe\x00",
        b"[1, 2]",
        b'"just a string"',
        {"payload": "x", "options": {"payloadType": "application/store"}},
        {"payload": "{broken", "options": {"payloadType": "application/json"}},
        {"payload": "[1]", "options": {"payloadType": "application/super+json"}},
        {"payload": "not json"},
        {"payload": 1, "options": "fast"},
        {"payload": 1, "options": [1]},
        {"payload": 1, "options": {"tags": 5}},
        {"payload": 1, "options": {"tags": [1, 2]}},
        {"payload": 1, "options": {"tags": [""]}},
        {"payload": 1, "options": {"tags": ["bad\ntag"]}},
        {"payload": 1, "options": {"tags": ["x" * 129]}},
        {"payload": 1, "options": {"tags": [f"t{i}" for i in range(11)]}},
        {"payload": 1, "options": {"idempotencyKey": 5}},
        {"payload": 1, "options": {"idempotencyKey": "k", "idempotencyKeyTTL": "soon"}},
        {"payload": 1, "options": {"idempotencyKey": "k", "idempotencyKeyTTL": [1]}},
        {"payload": 1, "options": {"metadata": [1, 2]}},
        {"payload": 1, "options": {"metadata": "{broken"}},
        {"payload": 1, "options": {"maxAttempts": "2"}},
        {"payload": 1, "options": {"maxAttempts": True}},
        {"payload": 1, "options": {"maxAttempts": 1.5}},
        {"payload": 1, "options": {"maxAttempts": 0}},
        {"payload": 1, "options": {"maxAttempts": 101}},  # over limits.max_attempts
        {"payload": 1, "options": {"idempotencyKey": "k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1)}},
    ]
    for body in bad:
        assert_json_error(await _trigger_raw(http, server, body), 400)
    long_request_key = {"x-trigger-request-idempotency-key": "r" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1)}
    assert_json_error(await _trigger_raw(http, server, {"payload": 1}, headers=long_request_key), 400)
    longest = "k" * MAX_IDEMPOTENCY_KEY_LENGTH
    accepted = await _trigger_raw(
        http,
        server,
        {"payload": 1, "options": {"idempotencyKey": longest}},
        headers={"x-trigger-request-idempotency-key": longest},
    )
    assert accepted.status_code == 200, accepted.text
    body = assert_json_error(await _trigger_raw(http, server, {"payload": 1}, task="no-such-task"), 404)
    assert "no-such-task" in body["error"]


async def test_trigger_body_over_the_limit_is_413_with_or_without_content_length(custom_server: Any) -> None:
    server: RunningServer = await custom_server(max_request_bytes=2000)
    big = orjson.dumps({"payload": "x" * 5000})

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(big), 1000):
            yield big[start : start + 1000]

    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        with_length = await _trigger_raw(client, server, big)
        assert_json_error(with_length, 413)
        chunked = await client.post(
            "/api/v1/tasks/echo/trigger",
            content=chunks(),
            headers={**secret(server), "Content-Type": "application/json"},
        )
        assert "content-length" not in chunked.request.headers
        assert chunked.request.headers["transfer-encoding"] == "chunked"
        assert_json_error(chunked, 413)
        small = await _trigger_raw(client, server, {"payload": {"s": "x" * 100}})
        assert small.status_code == 200


async def test_trigger_idempotency(server: RunningServer, http: httpx.AsyncClient) -> None:
    key = f"order-{uuid.uuid4().hex}"
    first = await _trigger_raw(http, server, {"payload": 1, "options": {"idempotencyKey": key}})
    second = await _trigger_raw(http, server, {"payload": 2, "options": {"idempotencyKey": key}})
    assert first.json() == {"id": first.json()["id"], "isCached": False}
    assert second.json() == {"id": first.json()["id"], "isCached": True}
    other_task = await _trigger_raw(http, server, {"payload": 1, "options": {"idempotencyKey": key}}, task="fail")
    assert other_task.json()["id"] != first.json()["id"]  # keys are per task

    # The official clients' per-call retry key: a retried request does not trigger twice.
    retry = {"x-trigger-request-idempotency-key": str(uuid.uuid4())}
    a = await _trigger_raw(http, server, {"payload": 1}, headers=retry)
    b = await _trigger_raw(http, server, {"payload": 1}, headers=retry)
    c = await _trigger_raw(http, server, {"payload": 1}, headers={"x-trigger-request-idempotency-key": "other"})
    assert a.json()["id"] == b.json()["id"] != c.json()["id"]
    assert b.json()["isCached"] is False


async def test_trigger_returns_a_run_token_in_headers(server: RunningServer, http: httpx.AsyncClient) -> None:
    response = await _trigger_raw(http, server, {"payload": 1})
    run_id = response.json()["id"]
    scopes = [f"read:runs:{run_id}", f"write:inputStreams:{run_id}"]
    claims = jwt.decode(
        response.headers["x-trigger-jwt"], server.settings.secret_key, algorithms=["HS256"], audience=AUDIENCE
    )
    assert claims["scopes"] == scopes and claims["pub"] is True and claims["iss"] == ISSUER
    assert claims["exp"] - claims["iat"] == 3600
    assert orjson.loads(response.headers["x-trigger-jwt-claims"]) == {"sub": "bridge", "pub": True, "scopes": scopes}
    # The token reads the run.
    assert (
        await feed(http, f"/realtime/v1/runs/{run_id}", bearer(response.headers["x-trigger-jwt"]))
    ).status_code == 200


async def test_one_time_token_is_not_burnt_by_a_refused_trigger(server: RunningServer, http: httpx.AsyncClient) -> None:
    once = bearer(token(server, "trigger:tasks:echo", one_time=True))
    refused = await _trigger_raw(http, server, {"payload": 1, "options": {"tags": [""]}}, headers=once)
    assert_json_error(refused, 400)
    assert (await _trigger_raw(http, server, {"payload": 1}, headers=once)).status_code == 200
    used = assert_json_error(await _trigger_raw(http, server, {"payload": 1}, headers=once), 422)
    assert "one-time use token" in used["error"]


async def test_a_retried_one_time_trigger_gets_its_run_and_another_request_gets_422(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    """The official SDK retries a call whose answer was lost with the same request key: that retry
    must get the run the first call created, not a refusal of the token it already used."""
    once = bearer(token(server, "trigger:tasks:echo", one_time=True))
    request = {**once, "x-trigger-request-idempotency-key": str(uuid.uuid4())}
    first = await _trigger_raw(http, server, {"payload": 1}, headers=request)
    retry = await _trigger_raw(http, server, {"payload": 1}, headers=request)
    assert first.status_code == retry.status_code == 200 and retry.json()["id"] == first.json()["id"]
    other = {**once, "x-trigger-request-idempotency-key": str(uuid.uuid4())}
    assert_json_error(await _trigger_raw(http, server, {"payload": 1}, headers=other), 422)
    assert_json_error(await _trigger_raw(http, server, {"payload": 1}, headers=once), 422)


# ---------------------------------------------------------------------------------------------
# batches (the SDK's two-phase v3 batch)


async def _create_batch(http: httpx.AsyncClient, server: RunningServer, count: int) -> tuple[str, str]:
    response = await http.post(
        "/api/v3/batches", json={"runCount": count, "taskIdentifiers": ["echo"]}, headers=secret(server)
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["runCount"] == count and body["isCached"] is False
    return body["id"], response.headers["x-trigger-jwt"]


def _ndjson(items: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(item) + b"\n" for item in items)


async def _send_items(
    http: httpx.AsyncClient, server: RunningServer, batch_id: str, content: bytes, auth: dict[str, str] | None = None
) -> httpx.Response:
    async def chunks() -> AsyncIterator[bytes]:  # streamed like the SDK: chunked, no Content-Length
        for start in range(0, len(content), 7):
            yield content[start : start + 7]

    return await http.post(
        f"/api/v3/batches/{batch_id}/items",
        content=chunks(),
        headers={**(auth or secret(server)), "Content-Type": "application/x-ndjson"},
    )


async def test_batch_two_phase_dedups_by_index_and_feeds_the_batch(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    batch_id, batch_token = await _create_batch(http, server, 3)
    claims = jwt.decode(batch_token, server.settings.secret_key, algorithms=["HS256"], audience=AUDIENCE)
    assert claims["scopes"] == [f"read:batch:{batch_id}"]
    items = [
        {
            "index": i,
            "task": "echo",
            "payload": f'{{"json":{{"i":{i}}}}}',
            "options": {"payloadType": "application/super+json", "tags": ["bt"]},
        }
        for i in range(3)
    ]
    sent = await _send_items(http, server, batch_id, _ndjson(items))
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    item_runs = answer.pop("runs")  # the bridge's addition: each item's run, in the request's order
    assert answer == {"id": batch_id, "itemsAccepted": 3, "itemsDeduplicated": 0, "sealed": True}
    assert [(item["index"], item["isCached"]) for item in item_runs] == [(0, False), (1, False), (2, False)]
    again = (await _send_items(http, server, batch_id, _ndjson(items[::-1]))).json()
    assert again.pop("runs") == item_runs[::-1]  # a repeated request learns the runs the first one triggered
    assert again == {"id": batch_id, "itemsAccepted": 0, "itemsDeduplicated": 3, "sealed": True}

    response = await feed(http, f"/realtime/v1/batches/{batch_id}", bearer(batch_token))
    assert response.status_code == 200
    run_ids = [row["value"]["id"] for row in rows(response)]
    assert sorted(run_ids) == sorted(item["id"] for item in item_runs)
    for item in item_runs:
        run = await until_final(item["id"])
        assert run.batch_id == batch_id and run.tags == ["bt"]
        assert run.output["echo"]["i"] == item["index"]
        retrieved = (await http.get(f"/api/v3/runs/{run.id}", headers=bearer(batch_token))).json()
        assert retrieved["batchId"] == batch_id and retrieved["triggerFunction"] == "batchTrigger"


async def test_batch_refuses_bad_items_without_triggering_any(server: RunningServer, http: httpx.AsyncClient) -> None:
    limit = server.settings.limits.max_batch_items
    batch_id, _ = await _create_batch(http, server, 2)
    good = {"index": 0, "task": "echo", "payload": 1}
    for content in (
        _ndjson([good]) + b"{not json\n",
        _ndjson([good, {"index": 1, "payload": 1}]),  # no task
        _ndjson([good, {"index": -1, "task": "echo"}]),
        _ndjson([good, {"index": "1", "task": "echo"}]),
        _ndjson([good]) + b"[1]\n",
        b"\xff\xfe\n",
        _ndjson([good, {"index": 1, "task": "echo", "options": {"tags": [""]}}]),
        _ndjson([good, {"index": 1, "task": "echo", "options": {"maxAttempts": 0}}]),
        _ndjson(
            [good, {"index": 1, "task": "echo", "options": {"idempotencyKey": "k" * (MAX_IDEMPOTENCY_KEY_LENGTH + 1)}}]
        ),
        _ndjson([good, {"index": 2, "task": "echo"}]),  # the batch announced 2 runs: indexes 0 and 1
        _ndjson([{"index": i, "task": "echo", "payload": i} for i in range(limit + 1)]),
    ):
        assert_json_error(await _send_items(http, server, batch_id, content), 400)
    assert_json_error(await _send_items(http, server, batch_id, _ndjson([good, {"index": 1, "task": "nope"}])), 404)
    # Nothing of the refused requests was triggered or marked as sent: the whole batch still goes through.
    assert (await feed(http, f"/realtime/v1/batches/{batch_id}", secret(server))).json() == [UP_TO_DATE]
    ok = await _send_items(http, server, batch_id, _ndjson([good, {"index": 1, "task": "echo", "payload": 2}]))
    assert ok.json()["itemsAccepted"] == 2

    for count in (0, -1, "3", True, limit + 1):
        response = await http.post("/api/v3/batches", json={"runCount": count}, headers=secret(server))
        assert_json_error(response, 400)
    refused = await http.post(
        "/api/v3/batches",
        json={"runCount": 1, "taskIdentifiers": ["fail"]},
        headers=bearer(token(server, "batchTrigger:tasks:echo")),
    )
    assert_json_error(refused, 403)
    assert_json_error(await _send_items(http, server, "not-a-batch", _ndjson([good])), 404)
    never_created = "batch_" + "0" * 24  # well-formed, but phase one never announced it
    assert_json_error(await _send_items(http, server, never_created, _ndjson([good])), 404)


async def test_max_attempts_overrides_the_task_retry_policy_in_trigger_and_batch(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    # durable-flaky fails its first attempt; its own policy allows 3, so only the option makes it fail.
    retried = await trigger(http, server, "durable-flaky", {"fail_attempts": 1})
    capped = await trigger(http, server, "durable-flaky", {"fail_attempts": 1}, maxAttempts=1)
    batch_id, _ = await _create_batch(http, server, 1)
    item = {"index": 0, "task": "durable-flaky", "payload": {"fail_attempts": 1}, "options": {"maxAttempts": 1}}
    assert (await _send_items(http, server, batch_id, _ndjson([item]))).json()["itemsAccepted"] == 1
    [batched] = [
        row["value"]["id"] for row in rows(await feed(http, f"/realtime/v1/batches/{batch_id}", secret(server)))
    ]
    for run_id, status, attempts in ((retried, "COMPLETED", 2), (capped, "FAILED", 1), (batched, "FAILED", 1)):
        await until_final(run_id)
        body = (await http.get(f"/api/v3/runs/{run_id}", headers=secret(server))).json()
        assert (body["status"], body["attemptCount"], body["attempts"]) == (status, attempts, []), run_id


async def test_a_run_between_two_attempts_is_retrying_after_failure_in_its_feed(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    run_id = await trigger(http, server, "durable-flaky", {"fail_attempts": 1})
    path, auth = f"/realtime/v1/runs/{run_id}", secret(server)
    answer = await feed(http, path, auth)
    statuses = [row["value"]["status"] for row in rows(answer)]
    while statuses[-1] != "COMPLETED_SUCCESSFULLY":  # live polls answer every change (the backoff is 0.2 s)
        live = {"handle": answer.headers["electric-handle"], "offset": answer.headers["electric-offset"]}
        answer = await feed(http, path, auth, live="true", cursor="", **live)
        statuses += [row["value"]["status"] for row in rows(answer)]
    assert "RETRYING_AFTER_FAILURE" in statuses, statuses
    retrying = statuses.index("RETRYING_AFTER_FAILURE")
    assert "EXECUTING" in statuses[retrying:], statuses  # the second attempt


# ---------------------------------------------------------------------------------------------
# retrieve, CORS, health


async def test_retrieve_has_the_schema_fields_and_omits_absent_ones(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    required = {
        "id", "status", "taskIdentifier", "isQueued", "isExecuting", "isWaiting", "isCompleted", "isSuccess",
        "isFailed", "isCancelled", "isTest", "createdAt", "updatedAt", "tags", "costInCents", "baseCostInCents",
        "durationMs", "depth", "triggerFunction", "relatedRuns",
    }  # fmt: skip
    run_id, gate = await executing_gate(http, server)
    running = (await http.get(f"/api/v3/runs/{run_id}", headers=secret(server))).json()
    assert required <= set(running)
    assert None not in running.values(), running
    assert running["status"] == "EXECUTING" and running["isExecuting"] is True and running["isCompleted"] is False
    assert "startedAt" in running
    for absent in ("finishedAt", "output", "error", "idempotencyKey", "batchId"):
        assert absent not in running, absent
    assert running["relatedRuns"] == {} and running["triggerFunction"] == "trigger"
    assert running["attemptCount"] == 1 and running["attempts"] == []
    gates[gate].set()
    await until_final(run_id)

    done = (await http.get(f"/api/v3/runs/{run_id}", headers=secret(server))).json()
    assert done["status"] == "COMPLETED" and done["isSuccess"] is True and done["isCompleted"] is True
    assert done["output"] == run_id and done["finishedAt"].endswith("Z") and "error" not in done
    assert_json_error(await http.get("/api/v3/runs/run_missing", headers=secret(server)), 404)

    failed_id = await trigger(http, server, "fail", 1, idempotencyKey="k-" + uuid.uuid4().hex, tags=["z", "y"])
    await until_final(failed_id)
    failed = (await http.get(f"/api/v3/runs/{failed_id}", headers=secret(server))).json()
    assert failed["isFailed"] is True and failed["isCompleted"] is True and "output" not in failed
    assert failed["error"]["name"] == "ValueError" and failed["tags"] == ["y", "z"]
    assert failed["idempotencyKey"].startswith("k-")


async def test_cors_preflight_and_exposed_headers(server: RunningServer, http: httpx.AsyncClient) -> None:
    origin = "https://app.example.com"
    run_id = await trigger(http, server, "echo", 1)
    for path, method in ((f"/realtime/v1/runs/{run_id}", "GET"), ("/api/v1/tasks/echo/trigger", "POST")):
        preflight = await http.options(
            path,
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": method,
                "Access-Control-Request-Headers": "authorization, content-type, x-trigger-electric-version",
            },
        )
        assert preflight.status_code == 200, preflight.text
        assert preflight.headers["access-control-allow-origin"] in ("*", origin)
        assert method in preflight.headers["access-control-allow-methods"]
        allowed = preflight.headers["access-control-allow-headers"].lower()
        assert "authorization" in allowed and "x-trigger-electric-version" in allowed

    response = await feed(http, f"/realtime/v1/runs/{run_id}", {**secret(server), "Origin": origin})
    exposed = {h.strip() for h in response.headers["access-control-expose-headers"].lower().split(",")}
    assert {"x-trigger-jwt", "x-trigger-jwt-claims"} <= exposed
    assert {
        "electric-offset",
        "electric-handle",
        "electric-schema",
        "electric-cursor",
        "electric-up-to-date",
    } <= exposed
    assert response.headers["access-control-allow-origin"] in ("*", origin)


async def test_health_and_readiness(server: RunningServer, http: httpx.AsyncClient) -> None:
    for path, answer in (("/healthz", {"ok": True, "pid": os.getpid()}), ("/readyz", {"ok": True})):
        response = await http.get(path)
        assert response.status_code == 200 and response.json() == answer


# ---------------------------------------------------------------------------------------------
# hostile input


async def test_hostile_input_never_gets_a_5xx(server: RunningServer, http: httpx.AsyncClient) -> None:
    run_id = await trigger(http, server, "echo", 1)
    await until_final(run_id)
    admin = secret(server)
    odd_ids = [
        "..%252F..%252Fetc%252Fpasswd",
        "%2E%2E",
        "run_%00",
        "run_%0d%0aSet-Cookie:%20x",
        "%F0%9F%92%A5",
        "%FF%FE",
        "r" * 4000,
        "run_' OR 1=1 --",
        "{}",
        "*",
    ]
    odd_params = [
        {"tags": "x" * 60_000},
        {"tags": ",".join(f"t{i}" for i in range(5000))},
        {"tags": "%00%01\x7f"},
        {"tags": "\u202e\ufeff\U0001f4a5"},
        {"tags": "a", "createdAt": "9" * 400 + "w"},
        {"tags": "a", "createdAt": "-5m"},
        {"tags": "a", "createdAt": "1e9999s"},
        {"tags": "a", "offset": "%FF", "handle": "\x00"},
        {"tags": "a", "offset": "9" * 500 + "_0", "handle": "feed_x", "live": "true"},
        {"tags": "a", "skipColumns": ",,," * 1000},
        {"offset": "-1", "live": "maybe"},
    ]
    bodies = [
        b"\xff\xfe\xfd",
        b"\x00" * 100,
        b"{" * 10_000,
        b"[" * 100_000,
        b'{"payload": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"runCount": 1e400}',
        b'{"payload": "\\ud800", "options": {"tags": ["\\ud800"]}}',
        b'{"options": {"metadata": "\\ud800", "metadataType": "application/json"}}',
        b'{"options": {"metadata": "[1]", "metadataType": "application/json"}}',
    ]

    requests: list[tuple[str, str, dict[str, Any]]] = []
    for odd in odd_ids:
        requests += [
            ("GET", f"/realtime/v1/runs/{odd}?offset=-1", {}),
            ("GET", f"/realtime/v1/batches/{odd}?offset=-1", {}),
            ("GET", f"/api/v3/runs/{odd}", {}),
            ("POST", f"/api/v2/runs/{odd}/cancel", {}),
            ("POST", f"/api/v1/tasks/{odd}/trigger", {"json": {"payload": 1}}),
            ("POST", f"/api/v3/batches/{odd}/items", {"content": b'{"task":"echo"}\n'}),
            ("POST", f"/api/v1/runs/{odd}/reschedule", {"json": {"delay": "1h"}}),
            ("GET", f"/api/v1/runs/{odd}/packets/{odd}", {}),
            ("PUT", f"/api/v2/packets/{odd}", {}),
            ("PUT", f"/packets/{odd}?expires={odd}&signature={odd}", {"content": b"{}"}),
            ("GET", f"/packets/{odd}?expires=1&signature={odd}", {}),
        ]
    for params in odd_params:
        requests.append(("GET", "/realtime/v1/runs", {"params": params}))
        requests.append(("GET", f"/realtime/v1/runs/{run_id}", {"params": params}))
    for body in bodies:
        for path in ("/api/v1/tasks/echo/trigger", "/api/v3/batches", "/api/v3/batches/batch_x/items",
                     "/api/v1/auth/jwt/claims", f"/api/v2/runs/{run_id}/cancel",
                     f"/api/v1/runs/{run_id}/reschedule"):  # fmt: skip
            requests.append(("POST", path, {"content": body}))
    for header in (b"Bearer \xff\xfe", b"Bearer " + b"a" * 8000, b"Bearer a.b.c", b"Bearer \xc3\xa9"):
        requests.append(("GET", f"/api/v3/runs/{run_id}", {"headers": {"Authorization": header}}))

    for method, path, kwargs in requests:
        headers = {**admin, **kwargs.pop("headers", {})}
        response = await http.request(method, path, headers=headers, **kwargs)
        assert response.status_code < 500, (method, path[:200], response.status_code, response.text[:300])
        assert response.headers["content-type"].startswith("application/json"), (method, path[:200], response.text)
        response.json()

    # Refused before the bridge's code runs (by the HTTP parser or the router, in plain text): still no 5xx.
    outside = [
        await http.get(f"/api/v3/runs/{run_id}", headers={"Authorization": b"Bearer \x7f"}),
        await http.get("/api/v3/runs/..%2F..%2Fetc%2Fpasswd", headers=admin),
        await http.get("/realtime/v1/runs/a/b/c", headers=admin),
        await http.delete(f"/api/v3/runs/{run_id}", headers=admin),
    ]
    assert [response.status_code for response in outside] == [400, 404, 404, 405]
    assert (await http.get("/healthz")).status_code == 200


async def test_a_client_gone_mid_body_ends_its_request_quietly(
    server: RunningServer, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn's loggers do not propagate to the root logger, where caplog listens.
    uvicorn_errors = logging.getLogger("uvicorn.error")
    uvicorn_errors.addHandler(caplog.handler)
    try:
        reader, writer = await asyncio.open_connection(*server.url.removeprefix("http://").split(":"))
        head = (
            "POST /api/v1/tasks/echo/trigger HTTP/1.1\r\nHost: bridge\r\n"
            f"Authorization: Bearer {server.settings.secret_key}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
        )
        writer.write(head.encode())
        # uvicorn answers 100 Continue when the endpoint first asks for the body: the request is being read.
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 100 Continue")
        in_flight = set(server.uvicorn.server_state.tasks)
        writer.write(b'{"payload": "' + b"x" * 400)
        writer.close()
        await writer.wait_closed()
        async with asyncio.timeout(10):
            await asyncio.gather(*in_flight)  # the request cycle has ended
    finally:
        uvicorn_errors.removeHandler(caplog.handler)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert (await http.get("/healthz")).status_code == 200
