"""The unmodified official npm packages (@trigger.dev/sdk, react-hooks 4.8.3) against a live bridge.

Each test drives a script of e2e/official-client (see its README) on both backends and asserts
what a user of the official stack sees: hook statuses, outputs, onComplete, tokens.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest

from bridge import runs
from bridge.backends.base import Gate
from bridge.runtime.access import create_public_token
from bridge.server.official.feeds import FeedSessions
from tests.conftest import RunningServer
from tests.support.helpers import until_final
from tests.support.official_client import harness_problem, run_script
from tests.support.tasks import gates


@pytest.fixture(autouse=True)
def _harness_installed() -> None:
    problem = harness_problem()
    if problem:
        pytest.fail(f"the official-client harness cannot run: {problem}", pytrace=False)


async def trigger(http: httpx.AsyncClient, key: str, task: str, payload: Any, **options: Any) -> str:
    response = await http.post(
        f"/api/v1/tasks/{task}/trigger",
        json={"payload": payload, "options": options},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert response.status_code == 200, response.text
    run_id: str = response.json()["id"]
    return run_id


async def test_trigger_and_watch_shows_progress_then_completion(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, gate = uuid.uuid4().hex, uuid.uuid4().hex
    gates[gate] = asyncio.Event()
    # The hook's first live poll means it has shown the run's first snapshot: only then may the task finish.
    sessions: FeedSessions = server.uvicorn.config.app.state.feed_sessions
    live_poll = asyncio.Event()
    real_get = sessions.get

    def get(handle: str) -> Any:
        live_poll.set()
        return real_get(handle)

    monkeypatch.setattr(sessions, "get", get)
    payload = {"name": name, "delay": 0.05, "gate": gate}
    script = asyncio.create_task(
        run_script(
            server, "trigger-and-watch.mjs", "slow-progress", json.dumps(payload), json.dumps({"tags": ["watched"]})
        )
    )
    polled = asyncio.create_task(live_poll.wait())
    await asyncio.wait({script, polled}, return_when=asyncio.FIRST_COMPLETED)
    gates[gate].set()
    polled.cancel()
    result = await script
    assert result.ok, result.explain()
    assert live_poll.is_set(), result.explain()
    run = result["run"]
    run_id = result["handle"]["id"]
    statuses = result["statuses"]
    assert statuses[-1] == "COMPLETED", result.explain()
    assert len(statuses) >= 2 and set(statuses[:-1]) <= {"QUEUED", "EXECUTING"}, result.explain()
    assert run["id"] == run_id and run["taskIdentifier"] == "slow-progress"
    assert run["payload"] == payload
    assert run["output"] == {"done": name}  # the Python task received the superjson payload decoded
    assert run["metadata"] == {"progress": 1}
    assert run["tags"] == ["watched"]
    assert run["isSuccess"] is True and run["isCompleted"] is True and run["isFailed"] is False
    assert run["finishedAt"] and run["startedAt"] and "Invalid" not in run["finishedAt"]
    assert run["durationMs"] >= 100
    assert result["onCompleteCount"] == 1
    assert result["feedRequestsAfterComplete"] == 0
    assert result["hookError"] is None and result["uncaught"] == []
    claims = result["handle"]["publicAccessTokenClaims"]
    assert claims["scopes"] == [f"read:runs:{run_id}", f"write:inputStreams:{run_id}"]
    assert claims["sub"] == "bridge" and claims["pub"] is True
    assert claims["exp"] - claims["iat"] == 3600
    stored = await until_final(run_id)
    assert stored.output == {"done": name}


async def test_failing_task_shows_failed_with_its_error(server: RunningServer) -> None:
    result = await run_script(server, "trigger-and-watch.mjs", "fail", json.dumps({"why": "testing"}))
    assert result.ok, result.explain()
    run = result["run"]
    assert result["statuses"][-1] == "FAILED"
    assert run["isFailed"] is True and run["isCompleted"] is True and run["isSuccess"] is False
    assert run["output"] is None
    assert run["error"]["name"] == "ValueError"
    assert run["error"]["message"] == "failed on purpose: {'why': 'testing'}"
    assert "ValueError" in run["error"]["stackTrace"]
    assert result["onCompleteCount"] == 1
    assert result["feedRequestsAfterComplete"] == 0
    assert result["hookError"] is None and result["uncaught"] == []


async def test_sdk_max_attempts_caps_the_retries_of_a_task(server: RunningServer) -> None:
    # durable-flaky fails its first attempt and its policy would retry it: maxAttempts 1 fails the run.
    capped = await run_script(
        server,
        "trigger-and-watch.mjs",
        "durable-flaky",
        json.dumps({"fail_attempts": 1}),
        json.dumps({"maxAttempts": 1}),
    )
    assert capped.ok, capped.explain()
    assert capped["statuses"][-1] == "FAILED" and capped["run"]["error"]["message"] == "flaky on purpose"

    retried = await run_script(server, "trigger-and-watch.mjs", "durable-flaky", json.dumps({"fail_attempts": 1}))
    assert retried.ok, retried.explain()
    assert retried["statuses"][-1] == "COMPLETED" and retried["run"]["output"] == {"attempts": 2}


async def test_use_run_schema_accepts_completed_and_failed_runs(server: RunningServer, http: httpx.AsyncClient) -> None:
    key = server.settings.secret_key
    ok_id = await trigger(http, key, "echo", {"n": 1}, tags=["b", "a"], idempotencyKey=f"k-{uuid.uuid4().hex}")
    failed_id = await trigger(http, key, "fail", "boom", payloadType="text/plain")
    await until_final(ok_id)
    await until_final(failed_id)

    ok = await run_script(server, "use-run.mjs", ok_id)
    assert ok.ok, ok.explain()
    run = ok["run"]
    assert run["id"] == ok_id and run["status"] == "COMPLETED" and run["taskIdentifier"] == "echo"
    assert run["isSuccess"] is True and run["isCompleted"] is True
    assert run["output"] == {"echo": {"n": 1}} and run["payload"] == {"n": 1}
    assert run["tags"] == ["a", "b"]
    assert run["finishedAt"] and run["startedAt"]
    assert run["attemptCount"] == 1

    # A read token for the run is enough; the failed run's error passes the schema.
    token = create_public_token(key, [f"read:runs:{failed_id}"])
    failed = await run_script(server, "use-run.mjs", failed_id, token)
    assert failed.ok, failed.explain()
    run = failed["run"]
    assert run["status"] == "FAILED" and run["isFailed"] is True and run["isSuccess"] is False
    assert run["error"]["name"] == "ValueError" and run["error"]["message"] == "failed on purpose: boom"
    assert "output" not in run

    # ...and a token for another run is refused (the hook reports the 403).
    other = await run_script(server, "use-run.mjs", ok_id, token)
    assert not other.ok and other["error"]["status"] == 403, other.explain()


async def test_tokens_minted_by_the_official_sdk_are_accepted(server: RunningServer, http: httpx.AsyncClient) -> None:
    run_id = await trigger(http, server.settings.secret_key, "echo", {"n": 2})
    await until_final(run_id)
    minted = await run_script(server, "create-token.mjs", "public", json.dumps({"read": {"runs": [run_id]}}), "1h")
    assert minted.ok, minted.explain()
    claims = minted["claims"]
    assert claims["sub"] == "bridge" and claims["pub"] is True  # from POST /api/v1/auth/jwt/claims
    assert claims["scopes"] == [f"read:runs:{run_id}"]
    auth = {"Authorization": f"Bearer {minted['token']}"}

    feed = await http.get(f"/realtime/v1/runs/{run_id}", params={"log": "full", "offset": "-1"}, headers=auth)
    assert feed.status_code == 200, feed.text
    row = feed.json()[0]
    assert row["value"]["id"] == run_id and row["value"]["status"] == "COMPLETED_SUCCESSFULLY"
    assert (await http.get(f"/api/v3/runs/{run_id}", headers=auth)).json()["output"] == {"echo": {"n": 2}}

    other_id = await trigger(http, server.settings.secret_key, "echo", {"n": 3})
    refused = await http.get(f"/realtime/v1/runs/{other_id}", params={"offset": "-1"}, headers=auth)
    assert refused.status_code == 403

    trigger_token = await run_script(server, "create-token.mjs", "trigger", "echo")
    assert trigger_token.ok, trigger_token.explain()
    assert trigger_token["claims"]["otu"] is True
    assert trigger_token["claims"]["scopes"] == ["trigger:tasks:echo"]


async def test_one_time_trigger_token_works_once_from_the_browser_hook(server: RunningServer) -> None:
    minted = await run_script(server, "create-token.mjs", "trigger", "echo")
    assert minted.ok, minted.explain()
    token = minted["token"]

    first = await run_script(server, "task-trigger.mjs", "echo", token, json.dumps({"y": 2}))
    assert first.ok, first.explain()
    assert first["run"]["status"] == "COMPLETED" and first["run"]["output"] == {"echo": {"y": 2}}
    assert first["onCompleteCount"] == 1 and first["hookError"] is None
    run_id = first["handle"]["id"]
    assert first["handle"]["publicAccessTokenClaims"]["scopes"] == [
        f"read:runs:{run_id}",
        f"write:inputStreams:{run_id}",
    ]

    second = await run_script(server, "task-trigger.mjs", "echo", token, json.dumps({"y": 3}))
    assert not second.ok, second.explain()
    assert second["stage"] == "trigger"
    assert second["error"]["status"] == 422, second.explain()
    assert "one-time use token" in second["error"]["message"]
    triggers = [r for r in second["requests"] if r["path"] == "/api/v1/tasks/echo/trigger"]
    assert [r["status"] for r in triggers] == [422]  # refused for good, not retried


async def test_tag_feed_sees_every_run_with_the_tag(server: RunningServer, http: httpx.AsyncClient) -> None:
    key = server.settings.secret_key
    tag = f"user:{uuid.uuid4().hex[:12]}"
    decoy = await trigger(http, key, "echo", {"decoy": True}, tags=[f"{tag}-other"])
    await until_final(decoy)  # finished before the feed opens: it would be in the snapshot if it matched
    tagged = [await trigger(http, key, "slow-progress", {"name": str(i), "delay": 0.05}, tags=[tag]) for i in range(3)]
    token = create_public_token(key, [f"read:tags:{tag}"])

    result = await run_script(server, "tag-feed.mjs", tag, token, "3")
    assert result.ok, result.explain()
    seen = {run["id"]: run for run in result["runs"]}
    assert set(seen) == set(tagged)
    assert result["finished"] == 3
    for i, run_id in enumerate(tagged):
        assert seen[run_id]["status"] == "COMPLETED"
        assert seen[run_id]["output"] == {"done": str(i)}
        assert seen[run_id]["tags"] == [tag]
    assert result["uncaught"] == []


async def test_sdk_batch_trigger_runs_every_item(server: RunningServer) -> None:
    items = [{"payload": {"n": n}, "options": {"tags": ["batched"]}} for n in range(4)]
    result = await run_script(server, "batch-trigger.mjs", "echo", json.dumps(items))
    assert result.ok, result.explain()
    batch_id = result["handle"]["batchId"]
    assert result["handle"]["runCount"] == 4
    assert result["handle"]["publicAccessTokenClaims"]["scopes"] == [f"read:batch:{batch_id}"]
    assert result["finished"] == 4
    outputs = sorted(run["output"]["echo"]["n"] for run in result["runs"])
    assert outputs == [0, 1, 2, 3]
    assert all(run["status"] == "COMPLETED" and run["tags"] == ["batched"] for run in result["runs"])
    paths = [r["path"] for r in result["requests"]]
    assert paths[:2] == ["/api/v3/batches", f"/api/v3/batches/{batch_id}/items"]
    stored = [await runs.retrieve(run["id"]) for run in result["runs"]]
    assert all(run.batch_id == batch_id for run in stored)


async def test_sdk_delay_ttl_reschedule_and_a_512_kib_payload(server: RunningServer) -> None:
    size = 512 * 1024  # over the SDK's 128 KiB offload threshold: uploaded as a packet before the trigger
    options = json.dumps({"delay": "1h", "ttl": "1m"})
    result = await run_script(server, "trigger-options.mjs", "echo", str(size), options, "1s")
    assert result.ok, result.explain()
    before, moved, after = result["before"], result["rescheduled"], result["after"]
    assert before["status"] == "DELAYED" and before["ttl"] == "1m", result.explain()
    assert before["payloadPresigned"] is True and before["payloadBlob"] == size  # runs.retrieve read the packet
    assert moved["status"] == "DELAYED" and moved["delayedUntil"] < before["delayedUntil"]
    assert result["statuses"][0] == "DELAYED" and result["statuses"][-1] == "COMPLETED", result.explain()
    assert result["hookBlobs"] == {"payload": size, "output": size}  # the hook fetched both packets
    assert after["status"] == "COMPLETED" and after["payloadBlob"] == size and after["outputBlob"] == size
    run = result["run"]
    assert run["delayedUntil"] == moved["delayedUntil"] and run["startedAt"] >= moved["delayedUntil"]
    assert result["onCompleteCount"] == 1 and result["hookError"] is None and result["uncaught"] == []
    uploads = [r["path"] for r in result["requests"] if r["method"] == "PUT"]  # the upload URL, then the upload
    assert len(uploads) == 2 and uploads[0].startswith("/api/v2/packets/") and uploads[1].startswith("/packets/packet_")
    stored = await runs.retrieve(result["handle"]["id"])
    assert stored.payload == {"blob": "x" * size} and stored.ttl == "1m"


async def test_sdk_triggers_on_a_named_queue_with_a_concurrency_key_a_priority_and_a_max_duration(
    server: RunningServer,
) -> None:
    """`queue` names a queue another task declares (`one-at-a-time`, limit 1): the run takes that limit."""
    options = json.dumps({"queue": "task/one-at-a-time", "concurrencyKey": "user-7", "priority": 5, "maxDuration": 30})
    result = await run_script(server, "trigger-options.mjs", "echo", "16", options)
    assert result.ok, result.explain()
    assert result["after"]["status"] == "COMPLETED" and result["statuses"][-1] == "COMPLETED", result.explain()
    stored = await runs.retrieve(result["handle"]["id"])
    assert (stored.queue, stored.concurrency_key, stored.concurrency_limit, stored.priority) == (
        "task/one-at-a-time",
        "user-7",
        1,
        5.0,
    )
    assert (await server.app_bridge.engine.retrieve(stored.id)).max_duration == 30  # not in the public shape
    gate = Gate("task/one-at-a-time", "user-7", 1)
    assert await server.app_bridge.broker.gate_state(gate) == ([], [])  # its slot was given back


async def test_sdk_sends_a_5_mib_payload_and_the_hook_reads_payload_and_output(server: RunningServer) -> None:
    size = 5 * 1024 * 1024
    result = await run_script(server, "trigger-options.mjs", "echo", str(size))
    assert result.ok, result.explain()
    assert result["statuses"][-1] == "COMPLETED" and result["hookBlobs"] == {"payload": size, "output": size}
    assert result["after"]["payloadBlob"] == size and result["after"]["outputBlob"] == size
    assert result["onCompleteCount"] == 1 and result["hookError"] is None and result["uncaught"] == []
