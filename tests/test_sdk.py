"""The Python SDK (`tasks`, `runs`, `metadata`, `auth`) against a real server's bridge, on both backends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import jwt
import pytest

from bridge import auth, metadata, runs, tasks
from bridge.config import Limits, Settings
from bridge.errors import NotFoundError, PayloadTooLargeError, ValidationError
from bridge.models import Run, RunStatus, new_id, now_ms
from bridge.runtime.access import AUDIENCE, ISSUER
from tests.conftest import SECRET_KEY, RunningServer, serving
from tests.support.helpers import unique, until_final, worker_of
from tests.support.tasks import gates, registry
from tests.support.ws_client import connect

# Tasks that exercise the metadata API from inside a run; the test server's worker runs this registry.


@registry.add_task("sdk-metadata-ops")
async def metadata_ops(payload: Any) -> dict[str, Any]:
    await metadata.set("status", "starting")
    await metadata.set("count", 10)
    await metadata.increment("count", 5)
    await metadata.decrement("count")
    await metadata.append("log", "a")
    await metadata.append("log", "b")
    await metadata.append("log", "a")
    await metadata.remove("log", "a")
    await metadata.set("scalar", 1)
    await metadata.append("scalar", 2)
    await metadata.set("temporary", True)
    await metadata.delete("temporary")
    count = await metadata.get("count")
    missing = await metadata.get("missing", "default")
    current = await metadata.current()
    await metadata.set("status", "done")
    return {"count": count, "missing": missing, "current": current}


@registry.add_task("sdk-metadata-replace")
async def metadata_replace(payload: Any) -> None:
    await metadata.set("old", 1)
    await metadata.replace({"new": 2})


@registry.add_task("sdk-metadata-limits")
async def metadata_limits(payload: dict[str, int]) -> dict[str, str]:
    """Tries a metadata value over the size limit and `increment` of a non-number; reports what was refused."""
    refused = {}
    try:
        await metadata.set("big", "x" * payload["size"])
    except PayloadTooLargeError as exc:
        refused["big"] = exc.code
    await metadata.set("word", "text")
    try:
        await metadata.increment("word")
    except ValidationError as exc:
        refused["increment"] = exc.code
    return refused


def decode(token: str) -> dict[str, Any]:
    """The claims of a token, checking its signature, audience and expiry with the server's key."""
    claims: dict[str, Any] = jwt.decode(token, SECRET_KEY, algorithms=["HS256"], audience=AUDIENCE)
    return claims


async def until(states: AsyncIterator[Run], condition: Callable[[Run], bool], timeout: float = 10) -> list[Run]:
    """The states an SDK feed yields up to the first satisfying `condition`; the feed is closed after."""
    seen = []
    async with asyncio.timeout(timeout), contextlib.aclosing(states) as feed:
        async for run in feed:
            seen.append(run)
            if condition(run):
                return seen
    raise AssertionError(f"the feed ended before the condition held; saw {[(r.id, r.status) for r in seen]}")


# tasks.trigger


async def test_trigger_returns_a_handle_with_a_one_hour_token_for_the_run(server: RunningServer) -> None:
    handle = await tasks.trigger("echo", {"x": 1}, tags="user:1", metadata={"origin": "test"})
    assert handle.id.startswith("run_") and len(handle.id) == len("run_") + 24
    assert handle.task_identifier == "echo"
    assert handle.is_cached is False
    claims = decode(handle.public_access_token)
    assert claims["scopes"] == [f"read:runs:{handle.id}", f"write:inputStreams:{handle.id}"]
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE and claims["pub"] is True
    assert claims["exp"] - claims["iat"] == 3600
    run = await runs.retrieve(handle.id)
    assert run.payload == {"x": 1} and run.tags == ["user:1"] and run.task_identifier == "echo"
    assert (await until_final(handle.id)).metadata == {"origin": "test"}


async def test_trigger_of_an_unknown_task_is_refused(server: RunningServer) -> None:
    with pytest.raises(NotFoundError):
        await tasks.trigger("no-such-task", 1)


async def test_idempotency_key_returns_the_same_run_marked_cached(server: RunningServer) -> None:
    key = unique("key")
    first = await tasks.trigger("echo", 1, idempotency_key=key)
    again = await tasks.trigger("echo", 2, idempotency_key=key)
    assert again.id == first.id and first.is_cached is False and again.is_cached is True
    await until_final(first.id)
    after_finish = await tasks.trigger("echo", 3, idempotency_key=key)
    assert after_finish.id == first.id and after_finish.is_cached is True
    assert (await runs.retrieve(first.id)).payload == 1  # the cached trigger did not change the run
    other_task = await tasks.trigger("progress", {"steps": 1}, idempotency_key=key)  # the key is per task
    assert other_task.id != first.id and other_task.is_cached is False
    fresh = await tasks.trigger("echo", 4)
    assert fresh.id != first.id and fresh.is_cached is False
    with pytest.raises(ValidationError, match="at most 2048 characters"):
        await tasks.trigger("echo", 5, idempotency_key="k" * 2049)  # never stored (was: a 2.5 MB key was)
    longest = await tasks.trigger("echo", 6, idempotency_key="k" * 2048)
    assert longest.is_cached is False


@pytest.mark.parametrize(
    ("tags", "why"),
    [
        ([f"t{i}" for i in range(11)], "at most 10 tags"),
        (["t" * 129], "129 characters"),
        (["line\nbreak"], "a control character"),
        (["tab\there"], "a control character"),
        ([""], "an empty tag"),
    ],
    ids=["11 tags", "129 chars", "newline", "tab", "empty"],
)
async def test_invalid_tags_are_refused_before_any_run_is_stored(
    server: RunningServer, tags: list[str], why: str
) -> None:
    marker = unique("marker")
    with pytest.raises(ValidationError):
        await tasks.trigger("echo", 1, tags=[marker, *tags])
    assert await server.app_bridge.broker.runs_with_tags([marker], 0, 10) == [], why


async def test_ten_tags_of_128_characters_are_accepted(server: RunningServer) -> None:
    tags = [unique(f"t{i}").ljust(128, "x") for i in range(10)]
    handle = await tasks.trigger("echo", 1, tags=tags)
    assert (await runs.retrieve(handle.id)).tags == tags
    repeated = await tasks.trigger("echo", 1, tags=[tags[0], tags[1], tags[0]])
    assert (await runs.retrieve(repeated.id)).tags == tags[:2]  # duplicates dropped, order kept


async def test_trigger_metadata_is_bounded_at_one_mebibyte(server: RunningServer) -> None:
    # Payloads and outputs have their own, larger bound: tests/test_packets.py.
    limit = server.settings.limits.max_payload_bytes
    handle = await tasks.trigger("echo", 1, metadata={"note": "x" * (limit - len('{"note":""}'))})  # at the limit
    assert len((await runs.retrieve(handle.id)).metadata["note"]) == limit - len('{"note":""}')
    with pytest.raises(PayloadTooLargeError):
        await tasks.trigger("echo", 1, metadata={"note": "x" * limit})


# tasks.batch_trigger


async def test_batch_trigger_creates_runs_that_carry_the_batch_id(server: RunningServer) -> None:
    tag = unique("tag")
    batch = await tasks.batch_trigger(
        "echo", [{"payload": i, "options": {"tags": [tag], "metadata": {"i": i}}} for i in range(3)]
    )
    assert batch.batch_id.startswith("batch_")
    assert len(batch.runs) == 3 and len({r.id for r in batch.runs}) == 3
    assert decode(batch.public_access_token)["scopes"] == [f"read:batch:{batch.batch_id}"]
    for i, handle in enumerate(batch.runs):
        assert handle.task_identifier == "echo" and handle.is_cached is False
        assert decode(handle.public_access_token)["scopes"][0] == f"read:runs:{handle.id}"
        run = await until_final(handle.id)
        assert run.batch_id == batch.batch_id and run.tags == [tag]
        assert run.payload == i and run.metadata == {"i": i} and run.output == {"echo": i}


async def test_batch_trigger_is_bounded_and_all_or_nothing(backend_settings: Settings) -> None:
    async with serving(replace(backend_settings, limits=replace(Limits(), max_batch_items=5))) as running:
        tag = unique("tag")
        with pytest.raises(ValidationError):
            await tasks.batch_trigger("echo", [])
        with pytest.raises(ValidationError):
            await tasks.batch_trigger("echo", [{"payload": i, "options": {"tags": [tag]}} for i in range(6)])
        with pytest.raises(ValidationError):  # the last item is invalid: none is stored
            await tasks.batch_trigger("echo", [{"options": {"tags": [tag]}}, {"options": {"tags": ["bad\x00"]}}])
        with pytest.raises(NotFoundError):
            await tasks.batch_trigger("no-such-task", [{"options": {"tags": [tag]}}])
        too_big = {"note": "x" * running.settings.limits.max_payload_bytes}
        with pytest.raises(PayloadTooLargeError):  # the metadata of the last item is too large: none is stored
            await tasks.batch_trigger("echo", [{"options": {"tags": [tag]}}, {"options": {"metadata": too_big}}])
        with pytest.raises(ValidationError):
            await tasks.batch_trigger("echo", [{"options": {"tags": [tag]}}, {"options": {"metadata": ["x"]}}])
        with pytest.raises(ValidationError):
            bad_ttl = {"idempotency_key": "k", "idempotency_key_ttl": "x"}
            await tasks.batch_trigger("echo", [{"options": {"tags": [tag]}}, {"options": bad_ttl}])
        assert await running.app_bridge.broker.runs_with_tags([tag], 0, 1000) == []
        full = await tasks.batch_trigger("echo", [{"payload": i, "options": {"tags": [tag]}} for i in range(5)])
        assert len(full.runs) == 5
        for handle in full.runs:
            assert (await until_final(handle.id)).status is RunStatus.COMPLETED


# runs.retrieve, runs.cancel, failures


async def test_retrieve_of_an_unknown_run_is_not_found(server: RunningServer) -> None:
    with pytest.raises(NotFoundError):
        await runs.retrieve(new_id("run_"))


async def test_cancel_stops_the_running_task_and_keeps_canceled(server: RunningServer) -> None:
    gate = unique("gate")
    handle = await tasks.trigger("wait-for-gate", {"gate": gate})
    await until(runs.subscribe_to_run(handle.id), lambda run: run.metadata.get("waiting") is True)
    worker = worker_of(server)
    _, execution = worker._running[handle.id]  # the asyncio task running the task function

    canceled = await runs.cancel(handle.id)
    assert canceled.status is RunStatus.CANCELED and canceled.finished_at is not None
    await asyncio.wait({execution}, timeout=10)
    assert execution.cancelled()  # the coroutine was stopped, not left waiting on its gate
    assert handle.id not in worker.running_run_ids
    after = await runs.retrieve(handle.id)
    assert after.status is RunStatus.CANCELED and after.output is None and after.error is None
    assert after.version == canceled.version  # nothing (CRASHED, COMPLETED) was stored after the cancel


async def test_cancel_of_a_finished_run_returns_it_unchanged(server: RunningServer) -> None:
    handle = await tasks.trigger("echo", 1)
    done = await until_final(handle.id)
    again = await runs.cancel(handle.id)
    assert again.status is RunStatus.COMPLETED and again.version == done.version and again.output == {"echo": 1}


async def test_failing_task_ends_failed_with_its_error(server: RunningServer) -> None:
    handle = await tasks.trigger("fail", "boom")
    run = await until_final(handle.id)
    assert run.status is RunStatus.FAILED and run.output is None and run.finished_at is not None
    assert run.error is not None
    assert run.error.name == "ValueError"
    assert run.error.message == "failed on purpose: boom"
    assert "Traceback" in run.error.stack_trace and "failed on purpose: boom" in run.error.stack_trace


# metadata


async def test_metadata_operations_are_visible_on_the_run(server: RunningServer) -> None:
    handle = await tasks.trigger("sdk-metadata-ops", None, metadata={"seed": True})
    states = await until(runs.subscribe_to_run(handle.id), lambda run: run.status.is_final)
    run = states[-1]
    assert run.status is RunStatus.COMPLETED, run.error
    expected = {"seed": True, "status": "done", "count": 14, "log": ["b"], "scalar": [1, 2]}
    assert run.metadata == expected
    assert run.output == {"count": 14, "missing": "default", "current": {**expected, "status": "starting"}}
    assert run.version == 2 + 13 + 1  # queued, executing, one per stored metadata change, completed


async def test_metadata_replace_swaps_the_whole_object(server: RunningServer) -> None:
    run = await until_final((await tasks.trigger("sdk-metadata-replace", None, metadata={"seed": 1})).id)
    assert run.status is RunStatus.COMPLETED and run.metadata == {"new": 2}


async def test_metadata_over_the_limit_or_a_non_number_increment_is_refused_in_the_task(
    server: RunningServer,
) -> None:
    size = server.settings.limits.max_payload_bytes
    run = await until_final((await tasks.trigger("sdk-metadata-limits", {"size": size})).id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {"big": "payload_too_large", "increment": "invalid_request"}
    assert run.metadata == {"word": "text"}


async def test_metadata_outside_a_task_is_an_error(server: RunningServer) -> None:
    with pytest.raises(RuntimeError, match="inside a running task"):
        await metadata.set("key", 1)


# runs.subscribe_*


async def test_subscribe_to_run_yields_the_current_state_then_changes_and_ends_when_finished(
    server: RunningServer,
) -> None:
    gate = unique("gate")
    handle = await tasks.trigger("wait-for-gate", {"gate": gate})
    states: list[Run] = []
    async with asyncio.timeout(10):
        async for run in runs.subscribe_to_run(handle.id):  # ends by itself at the final state
            states.append(run)
            if run.metadata.get("waiting"):
                gates.setdefault(gate, asyncio.Event()).set()
    versions = [s.version for s in states]
    assert versions == sorted(set(versions))
    assert states[0].id == handle.id
    assert states[-1].status is RunStatus.COMPLETED and states[-1].output == handle.id
    assert all(not s.status.is_final for s in states[:-1])


async def test_subscribe_to_runs_with_tag_needs_every_tag_and_follows_new_runs(server: RunningServer) -> None:
    a, b = unique("a"), unique("b")
    before = await tasks.trigger("echo", 1, tags=[a, b])
    await until_final(before.id)
    only_a = await tasks.trigger("echo", 2, tags=[a])
    await until_final(only_a.id)
    feed = runs.subscribe_to_runs_with_tag([a, b])
    new: list[str] = []

    seen: list[Run] = []
    async with asyncio.timeout(10), contextlib.aclosing(feed) as states:
        async for run in states:
            seen.append(run)
            if run.id == before.id and not new:
                new.append((await tasks.trigger("echo", 3, tags=[b, a])).id)
            if new and run.id == new[0] and run.status is RunStatus.COMPLETED:
                break
    assert seen[0].id == before.id and seen[0].status is RunStatus.COMPLETED
    assert {r.id for r in seen} == {before.id, new[0]}
    assert seen[-1].output == {"echo": 3}


async def test_subscribe_to_runs_with_tag_window_reaches_older_runs(server: RunningServer) -> None:
    tag = unique("tag")
    old = Run(id=new_id("run_"), task_identifier="echo", tags=[tag], created_at=now_ms() - 3 * 86_400_000)
    await server.app_bridge.broker.insert_run(old, None, 3600)
    recent = await tasks.trigger("echo", 1, tags=[tag])
    await until_final(recent.id)
    feed = runs.subscribe_to_runs_with_tag(tag)
    first = await anext(feed)  # the feed is open: all of its snapshot comes before any later run
    marker = await tasks.trigger("echo", 2, tags=[tag])
    day = [first, *await until(feed, lambda run: run.id == marker.id)]
    assert first.id == recent.id
    assert old.id not in {r.id for r in day}  # the default window is one day
    week = await until(runs.subscribe_to_runs_with_tag(tag, created_at="1w"), lambda run: run.id == old.id)
    assert week[-1].id == old.id


async def test_subscribe_to_batch_follows_every_run_to_the_end(server: RunningServer) -> None:
    batch = await tasks.batch_trigger("echo", [{"payload": i} for i in range(3)])
    latest: dict[str, Run] = {}

    def all_completed(run: Run) -> bool:
        known = latest.get(run.id)
        if known is None or run.version > known.version:
            latest[run.id] = run
        return len(latest) == 3 and all(r.status is RunStatus.COMPLETED for r in latest.values())

    await until(runs.subscribe_to_batch(batch.batch_id), all_completed)
    assert {r.id: r.output for r in latest.values()} == {h.id: {"echo": i} for i, h in enumerate(batch.runs)}
    assert {r.batch_id for r in latest.values()} == {batch.batch_id}


# auth


async def test_create_public_token_has_the_official_claims_and_works_on_the_websocket(server: RunningServer) -> None:
    handle = await tasks.trigger("echo", 1, tags=["t1"])
    token = auth.create_public_token(scopes={"read": {"runs": [handle.id], "tags": True}}, expiration_time="1h")
    claims = decode(token)
    assert claims["iss"] == ISSUER and claims["aud"] == AUDIENCE and claims["pub"] is True
    assert claims["scopes"] == [f"read:runs:{handle.id}", "read:tags"]
    assert claims["exp"] - claims["iat"] == 3600 and "otu" not in claims
    default = decode(auth.create_public_token(scopes=["read:runs"]))
    assert default["exp"] - default["iat"] == 15 * 60
    async with connect(server.ws_url) as client:
        await client.subscribe_run("s", handle.id, token)
        assert (await client.expect(lambda f: f.get("id") == "s"))["type"] == "snapshot"
        await client.subscribe_tags("t", ["t1"], token)
        assert (await client.expect(lambda f: f.get("id") == "t"))["type"] == "snapshot"


async def test_create_trigger_public_token_is_one_time_unless_multiple_use(server: RunningServer) -> None:
    once = decode(auth.create_trigger_public_token("echo"))
    assert once["scopes"] == ["trigger:tasks:echo"] and once["otu"] is True and once["pub"] is True
    assert once["iss"] == ISSUER and once["aud"] == AUDIENCE
    assert once["exp"] - once["iat"] == 15 * 60
    reusable = decode(auth.create_trigger_public_token("echo", multiple_use=True, expiration_time="2h"))
    assert "otu" not in reusable and reusable["exp"] - reusable["iat"] == 7200
    async with connect(server.ws_url) as client:  # a trigger token does not read runs
        handle = await tasks.trigger("echo", 1)
        await client.subscribe_run("s", handle.id, auth.create_trigger_public_token("echo", multiple_use=True))
        answer = await client.expect(lambda f: f.get("id") == "s")
    assert answer["type"] == "error" and answer["code"] == "forbidden"
