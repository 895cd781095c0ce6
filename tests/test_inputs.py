"""Input streams end to end, on both backends: the SDK's dispatch rules, waiting without a worker slot,
refusals, ordering under concurrency, the official HTTP route, the WebSocket `send` frame and the
official Node client. Tests synchronise on run states (the run feed), never on sleeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import httpx
import orjson
import pytest

from bridge import runs, streams, tasks
from bridge.backends.channels import run_channel
from bridge.errors import NotFoundError, PayloadTooLargeError, RunFinishedError, ValidationError
from bridge.models import Run, RunStatus
from bridge.runtime.engine import RunEngine
from bridge.runtime.hub import Message
from bridge.runtime.input_streams import input_key, send_input
from bridge.server.official import inputs as official_inputs
from bridge.testing.redis_server import start_redis_server
from tests.conftest import SECRET_KEY, RunningServer, serving, start_server, stop_server, suite_settings
from tests.support.helpers import token, unique, until_final, until_run
from tests.support.official_client import run_script
from tests.support.tasks import gates, inputs_changed, inputs_seen
from tests.support.ws_client import connect, error, of_type

pytestmark = pytest.mark.cluster

TIMEOUT = 30.0
MIB = 1024 * 1024


async def until_status(run_id: str, status: RunStatus) -> Run:
    return await until_run(run_id, lambda run: run.status is status or run.status.is_final)


async def finished_run() -> str:
    handle = await tasks.trigger("echo", {"x": 1})
    assert (await until_final(handle.id)).status is RunStatus.COMPLETED
    return handle.id


# SDK semantics


async def test_dispatch_rules_buffer_waiter_handlers_peek_and_drain(server: RunningServer) -> None:
    items = streams.input("items")
    gate = unique("gate")
    handle = await tasks.trigger("input-semantics", {"gate": gate})
    await until_status(handle.id, RunStatus.EXECUTING)
    await items.send(handle.id, "a")  # before anything listens: stored, delivered on attach
    await items.send(handle.id, "b")
    gates.setdefault(gate, asyncio.Event()).set()
    await until_run(handle.id, lambda run: run.metadata.get("phase") == "waiter")
    await items.send(handle.id, "c")
    await until_run(handle.id, lambda run: run.metadata.get("phase") == "handlers")
    await items.send(handle.id, "d")
    await until_run(handle.id, lambda run: run.metadata.get("phase") == "buffer")
    await items.send(handle.id, "e")
    await items.send(handle.id, "f")
    run = await until_final(handle.id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == {
        "first": "a",
        "peeked": ["b", "b"],
        "second": "b",
        "third": "c",
        "seen": ["c", "d"],  # the waiter's value reached the handler too; with no waiter, the handler alone
        "peeked_buffer": "e",
        "drained": ["e", "f"],
        "peek_after_drain": None,
    }


@pytest.mark.parametrize("mode", ["once", "wait"])
async def test_timeout_raises_input_stream_timeout_error_and_fails_the_run_unless_caught(
    server: RunningServer, mode: str
) -> None:
    failed = await until_final((await tasks.trigger("input-timeout", {"mode": mode})).id)
    assert failed.status is RunStatus.FAILED
    assert failed.error is not None and failed.error.name == "InputStreamTimeoutError"
    caught = await until_final((await tasks.trigger("input-timeout", {"mode": mode, "catch": True})).id)
    assert caught.status is RunStatus.COMPLETED and caught.output == "timed out"
    assert caught.metadata["caught"] == "InputStreamTimeoutError"


async def test_wait_shows_waiting_and_frees_the_only_worker_slot(server: RunningServer) -> None:
    async with serving(replace(server.settings, worker_concurrency=1)):
        waiting = await tasks.trigger("await-approval", {"timeout": 30})
        await until_status(waiting.id, RunStatus.WAITING)
        other = await tasks.trigger("echo", {"n": 2})  # runs on the only slot while the first waits
        assert (await until_final(other.id)).output == {"echo": {"n": 2}}
        assert (await runs.retrieve(waiting.id)).status is RunStatus.WAITING
        await streams.input("approval").send(waiting.id, {"approved": True})
        resumed = await until_final(waiting.id)
        assert resumed.status is RunStatus.COMPLETED and resumed.output == {"approved": True}
        after = await tasks.trigger("echo", {"n": 3})  # the slot came back exactly once
        assert (await until_final(after.id)).status is RunStatus.COMPLETED


async def test_cancelling_a_waiting_run_ends_it_canceled(server: RunningServer) -> None:
    handle = await tasks.trigger("await-approval", {"timeout": 30})
    await until_status(handle.id, RunStatus.WAITING)
    await runs.cancel(handle.id)
    assert (await until_final(handle.id)).status is RunStatus.CANCELED
    with pytest.raises(RunFinishedError):
        await streams.input("approval").send(handle.id, "late")


# Refusals


async def test_send_is_refused_for_unknown_finished_and_oversized(server: RunningServer) -> None:
    approval = streams.input("approval")
    with pytest.raises(NotFoundError):
        await approval.send("run_doesnotexist", 1)
    with pytest.raises(RunFinishedError):
        await approval.send(await finished_run(), 1)
    handle = await tasks.trigger("await-approval", {"timeout": 30})
    with pytest.raises(PayloadTooLargeError):
        await approval.send(handle.id, "x" * MIB)
    await approval.send(handle.id, "fits")
    assert (await until_final(handle.id)).output == "fits"


async def test_a_send_racing_completion_is_delivered_or_refused_never_lost(server: RunningServer) -> None:
    items = streams.input("items")
    for _ in range(3):
        handle = await tasks.trigger("first-input-then-finish", {})
        await until_status(handle.id, RunStatus.EXECUTING)
        results = await asyncio.gather(*(items.send(handle.id, i) for i in range(20)), return_exceptions=True)
        accepted = sorted(i for i, r in enumerate(results) if r is None)
        refused = [r for r in results if r is not None]
        assert all(isinstance(r, RunFinishedError) for r in refused), refused
        assert accepted, "the first value is always accepted: the run waits for it"
        run = await until_final(handle.id)
        assert run.status is RunStatus.COMPLETED and run.output in accepted
        seen = inputs_seen.setdefault(handle.id, [])
        async with asyncio.timeout(10):  # values accepted before the end are still dispatched (drain)
            while len(seen) < len(accepted):
                inputs_changed.clear()
                await inputs_changed.wait()
        assert sorted(seen) == accepted
        stored = await server.app_bridge.broker.read_chunks(handle.id, input_key("items"), 0, 100, MIB)
        assert sorted(orjson.loads(v) for v in stored.chunks) == accepted  # nothing refused was stored


# Idempotent sends: a send retried with its key (after an error, a reconnect) is stored once


async def stored_values(server: RunningServer, run_id: str, stream_id: str) -> list[object]:
    stored = await server.app_bridge.broker.read_chunks(run_id, input_key(stream_id), 0, 100, MIB)
    return [orjson.loads(value) for value in stored.chunks]


async def test_sdk_send_retried_with_its_key_is_stored_and_seen_once(server: RunningServer) -> None:
    items = streams.input("items")
    handle = await tasks.trigger("collect-inputs", {"timeout": 30})
    await until_status(handle.id, RunStatus.EXECUTING)
    await items.send(handle.id, "a", idempotency_key="key-a")
    await items.send(handle.id, "a", idempotency_key="key-a")  # the retry: nothing stored
    await items.send(handle.id, "other value", idempotency_key="key-a")  # the key decides, not the value
    await items.send(handle.id, "a", idempotency_key="key-b")  # another key: stored again
    await items.send(handle.id, "a")  # no key: stored
    await streams.input("other").send(handle.id, "o", idempotency_key="key-a")  # per stream
    other_run = await tasks.trigger("collect-inputs", {"timeout": 30})
    await items.send(other_run.id, "b", idempotency_key="key-a")  # per run
    await items.send(handle.id, "stop", idempotency_key="stop-1")
    run = await until_final(handle.id)
    assert run.status is RunStatus.COMPLETED, run.error
    assert run.output == ["a", "a", "a", "stop"]
    assert await stored_values(server, handle.id, "items") == ["a", "a", "a", "stop"]
    assert await stored_values(server, handle.id, "other") == ["o"]
    assert await stored_values(server, other_run.id, "items") == ["b"]
    await items.send(handle.id, "stop", idempotency_key="stop-1")  # finished, but accepted before: no error
    with pytest.raises(RunFinishedError):
        await items.send(handle.id, "stop", idempotency_key="stop-2")
    await items.send(other_run.id, "stop")
    assert (await until_final(other_run.id)).output == ["b", "stop"]


async def test_a_retried_send_resumes_a_parked_wait_once(server: RunningServer) -> None:
    approval = streams.input("approval")
    handle = await tasks.trigger("await-approval", {"timeout": 30})
    await until_status(handle.id, RunStatus.WAITING)
    await asyncio.gather(*(approval.send(handle.id, {"approved": True}, idempotency_key="k") for _ in range(5)))
    run = await until_final(handle.id)
    assert run.status is RunStatus.COMPLETED and run.output == {"approved": True}
    assert await stored_values(server, handle.id, "approval") == [{"approved": True}]


async def test_an_invalid_idempotency_key_is_refused_and_nothing_stored(server: RunningServer) -> None:
    items = streams.input("items")
    handle = await tasks.trigger("collect-inputs", {"timeout": 30})
    for bad in ("", "k" * 2049, 7):
        with pytest.raises(ValidationError, match="idempotency key"):
            await items.send(handle.id, "x", idempotency_key=bad)  # type: ignore[arg-type]
    await items.send(handle.id, "fits", idempotency_key="k" * 2048)
    await items.send(handle.id, "stop")
    assert (await until_final(handle.id)).output == ["fits", "stop"]


async def test_http_route_honours_the_request_idempotency_key(server: RunningServer, http: httpx.AsyncClient) -> None:
    handle = await tasks.trigger("collect-inputs", {"timeout": 30})
    await until_status(handle.id, RunStatus.EXECUTING)
    path = f"/realtime/v1/streams/{handle.id}/input/items"
    write = {"Authorization": f"Bearer {token(f'write:inputStreams:{handle.id}')}"}
    keyed = {**write, "x-trigger-request-idempotency-key": "req-1"}
    for _ in range(2):
        response = await http.post(path, json={"data": "a"}, headers=keyed)
        assert response.status_code == 200 and response.json() == {"ok": True}, response.text
    other = await http.post(path, json={"data": "b"}, headers={**write, "x-trigger-request-idempotency-key": "req-2"})
    assert other.status_code == 200
    empty = await http.post(path, json={"data": "c"}, headers={**write, "x-trigger-request-idempotency-key": ""})
    assert empty.status_code == 200  # an empty header is no key
    too_long = await http.post(
        path, json={"data": "d"}, headers={**write, "x-trigger-request-idempotency-key": "k" * 2049}
    )
    assert too_long.status_code == 400 and too_long.json()["ok"] is False, too_long.text
    assert "idempotency key" in too_long.json()["error"]
    assert (await http.post(path, json={"data": "stop"}, headers=write)).status_code == 200
    assert (await until_final(handle.id)).output == ["a", "b", "c", "stop"]
    again = await http.post(path, json={"data": "a"}, headers=keyed)  # finished, but accepted before
    assert again.status_code == 200 and again.json() == {"ok": True}


async def test_ws_send_frame_with_an_idempotency_key(server: RunningServer) -> None:
    handle = await tasks.trigger("collect-inputs", {"timeout": 30})
    await until_status(handle.id, RunStatus.EXECUTING)
    write = token(f"write:inputStreams:{handle.id}")
    base = {"type": "send", "runId": handle.id, "streamId": "items", "token": write}
    async with connect(server.ws_url) as client:
        await client.send({**base, "id": "k0", "data": "a", "idempotencyKey": "frame-1"})
        assert await client.expect(of_type("ack", "k0")) == {"type": "ack", "id": "k0", "index": 0}
    async with connect(server.ws_url) as client:  # the same frame again, as after a reconnect
        await client.send({**base, "id": "k0", "data": "a", "idempotencyKey": "frame-1"})
        assert await client.expect(of_type("ack", "k0")) == {"type": "ack", "id": "k0", "index": 0}
        await client.send({**base, "id": "k1", "data": "b", "idempotencyKey": "frame-2"})
        assert (await client.expect(of_type("ack", "k1")))["index"] == 1
        await client.send({**base, "id": "k2", "data": "c", "idempotencyKey": None})  # null: no key
        assert (await client.expect(of_type("ack", "k2")))["index"] == 2
        for i, bad in enumerate(["", "k" * 2049, 12, ["frame-1"]]):
            await client.send({**base, "id": f"e{i}", "data": "x", "idempotencyKey": bad})
            await client.expect(error("invalid_request", f"e{i}"))
        await client.send({**base, "id": "k3", "data": "stop", "idempotencyKey": "frame-3"})
        assert (await client.expect(of_type("ack", "k3")))["index"] == 3
    assert (await until_final(handle.id)).output == ["a", "b", "c", "stop"]


# Ordering under concurrency


async def test_a_thousand_values_from_several_senders_arrive_once_each_in_per_sender_order(
    server: RunningServer,
) -> None:
    handle = await tasks.trigger("collect-inputs", {"timeout": 60})
    await until_status(handle.id, RunStatus.EXECUTING)
    write = token(f"write:inputStreams:{handle.id}")
    counts = {"ws1": 300, "ws2": 200, "http1": 150, "http2": 150, "sdk": 200}
    assert sum(counts.values()) == 1000

    async def over_ws(sender: str) -> None:
        async with connect(server.ws_url) as client:
            for i in range(counts[sender]):  # pipelined: the connection handles its frames in order
                frame = {"type": "send", "id": f"{sender}-{i}", "runId": handle.id, "streamId": "items"}
                await client.send({**frame, "data": {"s": sender, "i": i}, "token": write})
            for i in range(counts[sender]):
                await client.expect(of_type("ack", f"{sender}-{i}"))

    async def over_http(sender: str) -> None:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            for i in range(counts[sender]):
                response = await http.post(
                    f"/realtime/v1/streams/{handle.id}/input/items",
                    json={"data": {"s": sender, "i": i}},
                    headers={"Authorization": f"Bearer {write}"},
                )
                assert response.status_code == 200 and response.json() == {"ok": True}, response.text

    async def over_sdk(sender: str) -> None:
        items = streams.input("items")
        for i in range(counts[sender]):
            await items.send(handle.id, {"s": sender, "i": i})

    async with asyncio.timeout(60):
        await asyncio.gather(over_ws("ws1"), over_ws("ws2"), over_http("http1"), over_http("http2"), over_sdk("sdk"))
    await streams.input("items").send(handle.id, "stop")
    run = await until_final(handle.id)
    assert run.status is RunStatus.COMPLETED, run.error
    received = run.output
    assert received[-1] == "stop"
    for sender, count in counts.items():
        assert [v["i"] for v in received[:-1] if v["s"] == sender] == list(range(count)), sender
    assert len(received) == 1001


# The official HTTP route


async def test_http_route_statuses_and_bodies(server: RunningServer, http: httpx.AsyncClient) -> None:
    handle = await tasks.trigger("await-approval", {"timeout": 30})
    path = f"/realtime/v1/streams/{handle.id}/input/approval"
    write = {"Authorization": f"Bearer {token(f'write:inputStreams:{handle.id}')}"}

    bad = await http.post(path, json={"data": 1}, headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    read_only = {"Authorization": f"Bearer {token(f'read:runs:{handle.id}')}"}
    forbidden = await http.post(path, json={"data": 1}, headers=read_only)
    assert forbidden.status_code == 403 and forbidden.json()["code"] == "unauthorized"
    other_run = {"Authorization": f"Bearer {token('write:inputStreams:run_other')}"}
    assert (await http.post(path, json={"data": 1}, headers=other_run)).status_code == 403

    too_big = await http.post(path, content=b'{"data":"' + b"x" * MIB + b'"}', headers=write)
    assert too_big.status_code == 413 and too_big.json()["error"] == "Request body too large"

    async def chunked() -> AsyncIterator[bytes]:
        yield b'{"data": 1}'

    no_length = await http.post(path, content=chunked(), headers=write)  # Transfer-Encoding: chunked
    assert no_length.status_code == 413 and no_length.json()["error"] == "Request body too large"

    for body in (b"not json", b"[1]", b'{"value": 1}'):
        invalid = await http.post(path, content=body, headers={**write, "content-type": "application/json"})
        assert invalid.status_code == 400 and invalid.json()["ok"] is False, body

    missing = await http.post(
        "/realtime/v1/streams/run_doesnotexist/input/approval",
        json={"data": 1},
        headers={"Authorization": f"Bearer {SECRET_KEY}"},
    )
    assert missing.status_code == 404
    assert missing.json()["ok"] is False and missing.json()["error"] == "Run not found"

    ok = await http.post(path, json={"data": {"approved": True}}, headers=write)
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    assert (await until_final(handle.id)).output == {"approved": True}

    finished = await http.post(path, json={"data": 2}, headers=write)
    assert finished.status_code == 400
    assert finished.json()["ok"] is False
    assert finished.json()["error"] == "Cannot send to input stream on a completed run"


# The WebSocket send frame


async def test_ws_send_frame_ack_and_every_error_code(server: RunningServer) -> None:
    handle = await tasks.trigger("collect-inputs", {"timeout": 30})
    await until_status(handle.id, RunStatus.EXECUTING)
    write = token(f"write:inputStreams:{handle.id}")
    base = {"type": "send", "runId": handle.id, "streamId": "items"}
    async with connect(server.ws_url) as client:
        await client.send({**base, "id": "a0", "data": {"n": 0}, "token": write})
        assert await client.expect(of_type("ack", "a0")) == {"type": "ack", "id": "a0", "index": 0}
        await client.send({**base, "id": "a1", "data": "x", "token": SECRET_KEY})
        assert (await client.expect(of_type("ack", "a1")))["index"] == 1

        await client.send({**base, "id": "e1", "data": 1, "token": "bad"})
        await client.expect(error("unauthorized", "e1"))
        await client.send({**base, "id": "e2", "data": 1, "token": token(f"read:runs:{handle.id}")})
        await client.expect(error("forbidden", "e2"))
        await client.send({**base, "id": "e3", "data": 1})  # no token: anonymous
        await client.expect(error("unauthorized", "e3"))
        await client.send({**base, "id": "e4", "runId": "run_doesnotexist", "data": 1, "token": SECRET_KEY})
        await client.expect(error("not_found", "e4"))
        await client.send({**base, "id": "e5", "data": "x" * MIB, "token": write})  # the frame fits, the value not
        await client.expect(error("payload_too_large", "e5"))
        await client.send({**base, "id": "e6", "token": write})  # no data
        await client.expect(error("invalid_request", "e6"))
        await client.send({**base, "id": "e7", "streamId": "", "data": 1, "token": write})
        await client.expect(error("invalid_request", "e7"))
        big_subscribe = {"type": "subscribe", "id": "s", "feed": "run", "runId": handle.id, "pad": "x" * 70_000}
        await client.send(big_subscribe)  # subscribe frames keep their tighter bound
        await client.expect(error("payload_too_large", "s"))

        await client.send({**base, "id": "a2", "data": "stop", "token": write})
        await client.expect(of_type("ack", "a2"))
        assert (await until_final(handle.id)).output == [{"n": 0}, "x", "stop"]
        await client.send({**base, "id": "e8", "data": 1, "token": write})
        await client.expect(error("run_finished", "e8"))


# The official Node client


async def test_official_sdk_input_send_delivers_and_surfaces_errors(server: RunningServer) -> None:
    handle = await tasks.trigger("await-approval", {"timeout": 30})
    await until_status(handle.id, RunStatus.WAITING)
    sent = await run_script(server, "input-send.mjs", handle.id, "approval", '{"approved": true, "by": "node"}')
    assert sent.ok, sent.explain()
    assert (await until_final(handle.id)).output == {"approved": True, "by": "node"}

    again = await run_script(server, "input-send.mjs", handle.id, "approval", "1")  # now finished
    assert not again.ok and again.exit_code == 1, again.explain()
    assert again["error"]["status"] == 400, again.explain()
    missing = await run_script(server, "input-send.mjs", "run_doesnotexist", "approval", "1")
    assert not missing.ok and missing["error"]["status"] == 404, missing.explain()
    scoped = token(f"write:inputStreams:{handle.id}")
    with_token = await run_script(server, "input-send.mjs", handle.id, "approval", "1", scoped)
    assert with_token["error"]["status"] == 400, with_token.explain()  # the public token is accepted, run finished


async def test_official_sdk_retry_of_a_send_whose_answer_was_lost_is_stored_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bridge stores the value, then the answer is lost (a 503 here, a killed bridge in issue 12): the
    SDK's retry carries the same x-trigger-request-idempotency-key, so the value is stored once."""
    keys: list[str | None] = []

    async def store_then_lose_the_answer(
        engine: RunEngine, run_id: str, stream_id: str, value: object, idempotency_key: str | None = None
    ) -> int:
        keys.append(idempotency_key)
        index = await send_input(engine, run_id, stream_id, value, idempotency_key)
        if len(keys) == 1:
            raise ConnectionError("the answer is lost")  # answered 503: the SDK retries
        return index

    monkeypatch.setattr(official_inputs, "send_input", store_then_lose_the_answer)
    handle = await tasks.trigger("collect-inputs", {"timeout": 30})
    await until_status(handle.id, RunStatus.EXECUTING)
    sent = await run_script(
        server, "input-send.mjs", handle.id, "items", '"once"', env={"INPUT_SEND_MAX_ATTEMPTS": "3"}
    )
    assert sent.ok, sent.explain()
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys  # one key per send, the same on its retry
    await streams.input("items").send(handle.id, "stop")
    assert (await until_final(handle.id)).output == ["once", "stop"]


async def test_a_value_sent_after_redis_restarted_reaches_the_waiting_task() -> None:
    """The failure peers had: a restart silently killed the cancel listener. Here the task's listener
    resubscribes and re-reads storage, so the value arrives (Redis keeping its data: AOF, fsync always)."""
    redis_server = start_redis_server(persistent=True)
    settings = suite_settings(redis_url=redis_server.url, key_prefix=unique("restart"))
    server, task = await start_server(settings)
    try:
        handle = await tasks.trigger("await-approval", {"timeout": 120})
        await until_status(handle.id, RunStatus.WAITING)
        resynced = asyncio.Event()  # the broker signals it once reconnected and resubscribed

        def on_message(channel: str, message: Message | None) -> None:
            if message is None:
                resynced.set()

        await server.app_bridge.hub.attach(run_channel(handle.id), on_message)
        await asyncio.to_thread(redis_server.restart)
        async with asyncio.timeout(30):
            await resynced.wait()
        await streams.input("approval").send(handle.id, {"approved": True})
        final = await until_final(handle.id)
        assert final.status is RunStatus.COMPLETED
        assert final.output == {"approved": True}
    finally:
        await stop_server(server, task)
        redis_server.stop()


async def test_a_send_ack_comes_after_every_chunk_the_run_stored_before_it(server: RunningServer) -> None:
    """A Stop button must see no token after its ack that the task wrote before the stop was stored."""
    count = 3000
    handle = await tasks.trigger("write-then-await-stop", {"count": count})
    await until_run(handle.id, lambda run: run.metadata.get("written") == count)
    tok = handle.public_access_token
    async with connect(server.ws_url) as client:
        await client.send({"type": "subscribe", "id": "ai", "feed": "stream", "runId": handle.id, "key": "ai",
                           "token": tok})  # fmt: skip
        first = await client.expect(of_type("chunk", "ai"))  # streaming: the outbox fills while we do not read
        await client.send({"type": "send", "id": "stop", "runId": handle.id, "streamId": "stop", "data": True,
                           "token": tok})  # fmt: skip
        frames = await client.frames_until(of_type("ack", "stop"))
    indexes = [first["index"], *(frame["index"] for frame in frames if frame["type"] == "chunk")]
    assert indexes == list(range(count))
    assert (await until_final(handle.id)).output == count
