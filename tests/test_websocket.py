"""The WebSocket protocol (docs/protocol.md), frame by frame, against a real server on both backends."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import orjson
import pytest

from bridge import tasks
from bridge.config import Settings
from bridge.errors import BackendUnavailableError
from bridge.models import Run, new_id, now_ms
from bridge.runtime.access import AUDIENCE, ISSUER, create_public_token
from bridge.server.topics import TopicRouter
from bridge.server.websocket.protocol import CLOSE_SLOW_CONSUMER, MAX_SUBSCRIPTION_ID_LENGTH
from tests.conftest import SECRET_KEY, RunningServer
from tests.support.helpers import open_gate, server_with, token, unique, until_final, until_run
from tests.support.ws_client import Frame, WsClient, connect, error, of_type, on_topic, runs_in

pytestmark = pytest.mark.cluster

# helpers


def incompressible(size: int) -> str:
    """About `size` * 4/3 characters that no compression shrinks, so frames really occupy socket buffers."""
    return base64.b64encode(os.urandom(size)).decode()


def completed(run_id: str) -> Callable[[Frame], bool]:
    return lambda run: run["id"] == run_id and run["status"] == "COMPLETED"


def topic_frames(frames: list[Frame], topic: str) -> list[Frame]:
    return [f for f in frames if f.get("topic") == topic]


async def trigger_gated(tags: list[str] | None = None) -> tuple[str, str]:
    """A `wait-for-gate` run; it completes once `open_gate(gate)` is called."""
    gate = unique("gate")
    handle = await tasks.trigger("wait-for-gate", {"gate": gate}, tags=tags or [])
    return handle.id, gate


async def until_waiting(run_id: str) -> Run:
    """Until a gated run is blocked on its gate: from then on it changes only when the gate opens."""
    return await until_run(run_id, lambda run: run.metadata.get("waiting") is True)


class Latest:
    """What a client keeps per run: the state with the highest version seen."""

    def __init__(self) -> None:
        self.runs: dict[str, Frame] = {}

    def apply(self, frame: Frame) -> None:
        for run in runs_in(frame):
            known = self.runs.get(run["id"])
            if known is None or run["version"] > known["version"]:
                self.runs[run["id"]] = run

    def all_final(self, run_ids: set[str], status: str = "COMPLETED") -> bool:
        return all(self.runs.get(rid, {}).get("status") == status for rid in run_ids)


def topics_of(server: RunningServer) -> TopicRouter:
    router: TopicRouter = server.uvicorn.config.app.state.topics
    return router


@contextlib.asynccontextmanager
async def stalled_client(server: RunningServer) -> AsyncIterator[WsClient]:
    """A client whose socket fills as soon as the test stops calling recv: a 4 KiB receive buffer, a
    one-message queue and no compression, so what the server sends backs up into the server's own buffers."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    port = int(server.url.rsplit(":", 1)[1])
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    async with connect(server.ws_url, sock=sock, max_queue=1, compression=None, max_size=None) as client:
        yield client


def slow_consumer_closes(server: RunningServer) -> dict[str, float | None]:
    """`bridge_slow_consumer_closes_total` by reason, as /metrics reports it."""
    registry = server.app_bridge.metrics.registry
    return {
        reason: registry.get_sample_value("bridge_slow_consumer_closes_total", {"reason": reason})
        for reason in ("queue_full", "send_timeout")
    }


# welcome, ping


async def test_welcome_is_the_first_frame_and_states_the_limits(server: RunningServer) -> None:
    async with connect(server.ws_url, welcome=False) as client:
        frames = await client.frames_until(lambda _: True)
    assert frames == [
        {
            "type": "welcome",
            "protocol": 1,
            "limits": {
                "maxSubscriptions": server.settings.limits.max_subscriptions_per_connection,
                "maxFrameBytes": server.settings.limits.max_frame_bytes,
                "maxSubscribeFrameBytes": server.settings.limits.max_control_frame_bytes,
            },
        }
    ]


async def test_ping_is_answered_by_pong_with_its_id_also_in_a_binary_frame(server: RunningServer) -> None:
    async with connect(server.ws_url) as client:
        await client.send({"type": "ping", "id": "p1"})
        assert await client.frames_until(of_type("pong")) == [{"type": "pong", "id": "p1"}]
        await client.send({"type": "ping"})
        assert await client.frames_until(of_type("pong")) == [{"type": "pong", "id": None}]
        await client.send(b'{"type": "ping", "id": "binary"}')
        assert await client.frames_until(of_type("pong")) == [{"type": "pong", "id": "binary"}]


# run feed


async def test_run_feed_sends_the_snapshot_then_each_change_until_completed(server: RunningServer) -> None:
    run_id, gate = await trigger_gated()
    await until_waiting(run_id)  # quiet from here until the gate opens
    topic = f"run:{run_id}"
    async with connect(server.ws_url) as client:
        await client.subscribe_run("s1", run_id, token(f"read:runs:{run_id}"))
        snapshot = await client.frames_until(lambda _: True)
        assert snapshot[0]["type"] == "snapshot" and snapshot[0]["id"] == "s1" and snapshot[0]["topic"] == topic
        (before,) = snapshot[0]["runs"]
        assert before["id"] == run_id and before["status"] == "EXECUTING" and before["metadata"] == {"waiting": True}
        open_gate(gate)
        frames = await client.frames_until(on_topic(topic, completed(run_id)))
        frames += await client.sync()
    assert all(f["type"] == "update" and f["topic"] == topic for f in frames)
    versions = [f["run"]["version"] for f in frames]
    assert versions == sorted(set(versions)) and versions[0] > before["version"]
    final = frames[-1]["run"]
    assert final["status"] == "COMPLETED"
    assert final["output"] == run_id
    assert final["metadata"] == {"waiting": True}
    assert final["finishedAt"] is not None and final["error"] is None


async def test_run_feed_versions_only_grow_after_the_snapshot_of_a_busy_run(server: RunningServer) -> None:
    """Subscribing while a run changes: an update may come before the snapshot (protocol rule 2); after it, once
    states no newer than the snapshot are dropped, versions strictly increase up to the final state."""
    steps = 30
    handle = await tasks.trigger("progress", {"steps": steps})
    topic = f"run:{handle.id}"
    async with connect(server.ws_url) as client:
        await client.subscribe_run("s1", handle.id, handle.public_access_token)
        frames = await client.frames_until(on_topic(topic, completed(handle.id)))
        frames += await client.sync()
    assert all(f.get("topic") == topic for f in frames)
    (at,) = [i for i, f in enumerate(frames) if f["type"] == "snapshot"]
    assert frames[at]["id"] == "s1"
    (snapshot_run,) = frames[at]["runs"]
    after = [f["run"]["version"] for f in frames[at + 1 :] if f["run"]["version"] > snapshot_run["version"]]
    assert after == sorted(set(after))
    final = max((r for f in frames for r in runs_in(f)), key=lambda r: r["version"])
    assert final["status"] == "COMPLETED" and final["version"] == steps + 3  # queued, executing, steps, completed
    assert final["output"] == {"steps": steps} and final["metadata"] == {"progress": 1.0}


async def test_finished_run_gives_its_final_snapshot_and_nothing_more(server: RunningServer) -> None:
    handle = await tasks.trigger("echo", {"x": 1})
    done = await until_final(handle.id)
    async with connect(server.ws_url) as client:
        await client.subscribe_run("s1", handle.id, handle.public_access_token)
        snapshot = await client.expect(of_type("snapshot", "s1"))
        assert await client.sync() == []
    (run,) = snapshot["runs"]
    assert run["status"] == "COMPLETED" and run["output"] == {"echo": {"x": 1}} and run["version"] == done.version


async def test_run_feed_accepts_every_documented_read_scope_and_nothing_else(server: RunningServer) -> None:
    tag = unique("tag")
    batch = await tasks.batch_trigger("echo", [{"payload": 1, "options": {"tags": [tag]}}])
    run_id = batch.runs[0].id
    allowed = {
        "run": token(f"read:runs:{run_id}"),
        "task": token("read:tasks:echo"),
        "tag": token(f"read:tags:{tag}"),
        "batch": token(f"read:batch:{batch.batch_id}"),
        "every-run": token("read:runs"),
        "type-all": token("read:all"),
        "admin": token("admin"),
        "secret-key": SECRET_KEY,
        "handle": batch.runs[0].public_access_token,
    }
    refused = {
        "other-run": token(f"read:runs:{new_id('run_')}"),
        "other-task": token("read:tasks:progress"),
        "other-tag": token(f"read:tags:{unique('tag')}"),
        "other-batch": token(f"read:batch:{new_id('batch_')}"),
        "write-only": token(f"write:runs:{run_id}"),
        "trigger-only": token("trigger:tasks:echo"),
    }
    async with connect(server.ws_url) as client:
        for name, tok in allowed.items():
            await client.subscribe_run(name, run_id, tok)
            snapshot = await client.expect(lambda f, n=name: f.get("id") == n)
            assert snapshot["type"] == "snapshot", (name, snapshot)
            assert [r["id"] for r in snapshot["runs"]] == [run_id]
        for name, tok in refused.items():
            await client.subscribe_run(name, run_id, tok)
            answer = await client.expect(lambda f, n=name: f.get("id") == n)
            assert answer["type"] == "error" and answer["code"] == "forbidden", (name, answer)


# tags feed


async def test_tags_feed_holds_runs_with_all_the_tags_and_follows_them_live(server: RunningServer) -> None:
    a, b = unique("a"), unique("b")
    both = await tasks.trigger("echo", 1, tags=[a, b])
    await tasks.trigger("echo", 2, tags=[a])
    await tasks.trigger("echo", 3, tags=[b])
    more = await tasks.trigger("echo", 4, tags=[b, "extra", a])
    async with connect(server.ws_url) as client:
        await client.subscribe_tags("t", [b, a], token(f"read:tags:{a}"))
        snapshot = await client.expect(of_type("snapshot", "t"))
        topic = snapshot["topic"]
        assert topic == "tags:" + orjson.dumps(sorted([a, b])).decode()
        assert {r["id"] for r in snapshot["runs"]} == {more.id, both.id}

        miss = await tasks.trigger("echo", 5, tags=[a])
        await until_final(miss.id)  # every change of `miss` is published before `hit` exists
        hit = await tasks.trigger("echo", 6, tags=[a, b])
        frames = await client.frames_until(on_topic(topic, completed(hit.id)))
        frames += await client.sync()
    seen = {r["id"] for f in frames for r in runs_in(f)}
    assert miss.id not in seen
    assert seen <= {both.id, more.id, hit.id}
    hit_states = [f["run"] for f in frames if f["type"] == "update" and f["run"]["id"] == hit.id]
    versions = [r["version"] for r in hit_states]
    assert versions == sorted(set(versions))
    assert hit_states[-1]["output"] == {"echo": 6} and hit_states[-1]["tags"] == [a, b]


async def test_tags_feed_created_at_window_reaches_past_a_day_up_to_the_retention(server: RunningServer) -> None:
    tag = unique("tag")
    old = Run(id=new_id("run_"), task_identifier="echo", tags=[tag], created_at=now_ms() - 2 * 86_400_000)
    await server.app_bridge.broker.insert_run(old, None, 3600)  # history: a run made two days ago
    fresh = await tasks.trigger("echo", 1, tags=[tag])
    windows: dict[str, Any] = {"default": None, "1h": "1h", "1w": "1w", "seconds": 3 * 86_400, "beyond": "30d"}
    expected = {
        "default": [fresh.id],  # 1 day
        "1h": [fresh.id],
        "1w": [fresh.id, old.id],
        "seconds": [fresh.id, old.id],
        "beyond": [fresh.id, old.id],  # capped at the retention (7 days), not refused
    }
    async with connect(server.ws_url) as client:
        for name, window in windows.items():
            extra = {} if window is None else {"createdAt": window}
            await client.subscribe_tags(name, [tag], token("read:tags"), **extra)
            snapshot = await client.expect(lambda f, n=name: f.get("id") == n)
            assert snapshot["type"] == "snapshot", snapshot
            assert [r["id"] for r in snapshot["runs"]] == expected[name], name


async def test_tags_feed_snapshot_holds_at_most_the_newest_runs_of_the_limit(backend_settings: Settings) -> None:
    async with server_with(backend_settings, max_tag_feed_runs=3) as server:
        tag = unique("tag")
        made = []
        for age in (5, 4, 3, 2, 1):  # history: one run a second (triggered runs may share a millisecond)
            run = Run(id=new_id("run_"), task_identifier="echo", tags=[tag], created_at=now_ms() - age * 1000)
            await server.app_bridge.broker.insert_run(run, None, 3600)
            made.append(run.id)
        async with connect(server.ws_url) as client:
            await client.subscribe_tags("t", [tag], token("read:runs"))
            snapshot = await client.expect(of_type("snapshot", "t"))
    assert [r["id"] for r in snapshot["runs"]] == made[::-1][:3]


async def test_a_snapshot_over_the_send_queue_bound_fails_its_subscription_not_the_connection(
    server: RunningServer,
) -> None:
    """Queued, a 9 MB snapshot would close the connection as a slow consumer (8 MiB send queue) on
    every reconnection: the subscription fails with a clear error and the connection carries on."""
    tag = unique("big")
    for _ in range(9):
        run = Run(id=new_id("run_"), task_identifier="echo", tags=[tag], payload="x" * 1_000_000)
        await server.app_bridge.broker.insert_run(run, None, 3600)
    small = await tasks.trigger("echo", 1)
    async with connect(server.ws_url) as client:
        await client.subscribe_tags("big", [tag], token("read:tags"))
        refused = await client.expect(error("payload_too_large", "big"))
        assert "narrow it" in refused["message"]
        await client.subscribe_run("small", small.id, token("read:runs"))
        assert (await client.expect(of_type("snapshot", "small")))["runs"][0]["id"] == small.id
        await client.subscribe_tags("big", [tag, "also"], token("read:tags"))  # the id is free again
        assert (await client.expect(of_type("snapshot", "big")))["runs"] == []


async def test_tags_feed_accepts_ten_tags_of_128_characters(server: RunningServer) -> None:
    tags = [unique("t").ljust(128, "x") for _ in range(10)]
    handle = await tasks.trigger("echo", 1, tags=tags)
    async with connect(server.ws_url) as client:
        await client.subscribe_tags("t", tags, token("read:tags"))
        snapshot = await client.expect(lambda f: f.get("id") == "t")
    assert snapshot["type"] == "snapshot", snapshot
    assert [r["id"] for r in snapshot["runs"]] == [handle.id]


# batch feed


async def test_batch_feed_holds_the_batch_runs_until_all_completed(server: RunningServer) -> None:
    batch = await tasks.batch_trigger("echo", [{"payload": i} for i in range(3)])
    ids = {r.id for r in batch.runs}
    latest = Latest()
    async with connect(server.ws_url) as client:
        await client.subscribe_batch("b", batch.batch_id, batch.public_access_token)
        snapshot = await client.expect(of_type("snapshot", "b"))
        assert snapshot["topic"] == f"batch:{batch.batch_id}"
        assert {r["id"] for r in snapshot["runs"]} == ids
        latest.apply(snapshot)

        def all_done(frame: Frame) -> bool:
            if frame.get("topic") == snapshot["topic"]:
                latest.apply(frame)
            return latest.all_final(ids)

        if not latest.all_final(ids):
            await client.frames_until(all_done)
    assert {r["batchId"] for r in latest.runs.values()} == {batch.batch_id}
    outputs = {r["id"]: r["output"] for r in latest.runs.values()}
    assert outputs == {handle.id: {"echo": i} for i, handle in enumerate(batch.runs)}


# unsubscribe, several subscriptions


async def test_unsubscribe_is_acknowledged_and_ends_the_updates(server: RunningServer) -> None:
    tag = unique("tag")
    run_id, gate = await trigger_gated([tag])
    await until_waiting(run_id)
    async with connect(server.ws_url) as client:
        await client.subscribe_run("run", run_id, token(f"read:runs:{run_id}"))
        await client.subscribe_tags("control", [tag], token(f"read:tags:{tag}"))  # sees the same changes
        await client.expect(of_type("snapshot", "run"))
        control = (await client.expect(of_type("snapshot", "control")))["topic"]
        await client.unsubscribe("run")
        ack = await client.frames_until(of_type("unsubscribed"))
        assert ack[-1] == {"type": "unsubscribed", "id": "run"}

        open_gate(gate)
        after = await client.frames_until(on_topic(control, completed(run_id)))
        after += await client.sync()
        assert topic_frames(after, f"run:{run_id}") == []

        await client.unsubscribe("run")
        assert await client.frames_until(lambda _: True) == [
            {"type": "error", "id": "run", "code": "not_found", "message": "no subscription 'run' on this connection"}
        ]


async def test_two_subscriptions_to_one_run_each_get_a_snapshot_and_survive_each_other(
    server: RunningServer,
) -> None:
    run_id, gate = await trigger_gated()
    await until_waiting(run_id)
    topic = f"run:{run_id}"
    async with connect(server.ws_url) as client:
        await client.subscribe_run("first", run_id, token(f"read:runs:{run_id}"))
        await client.subscribe_run("second", run_id, token("read:tasks:wait-for-gate"))
        for sid in ("first", "second"):
            snapshot = await client.expect(of_type("snapshot", sid))
            assert snapshot["topic"] == topic and [r["id"] for r in snapshot["runs"]] == [run_id]
        await client.unsubscribe("first")
        await client.expect(of_type("unsubscribed", "first"))
        open_gate(gate)
        frames = await client.frames_until(on_topic(topic, completed(run_id)))
        frames += await client.sync()
    final_version = max(r["version"] for f in frames for r in runs_in(f))
    finals = [f for f in frames if f["run"]["version"] == final_version]
    assert len(finals) == 1  # one update per change for the connection, not one per subscription


# errors


@dataclass
class Scene:
    run_id: str  # a gated run followed by the subscription "live"
    tag: str  # its tag
    other_run_id: str  # another (finished) run


ErrorCase = Callable[[Scene], tuple[dict[str, Any] | str | bytes, str, str | None]]


def _sub(scene: Scene, **fields: Any) -> dict[str, Any]:
    frame = {"type": "subscribe", "id": "x", "feed": "run", "runId": scene.run_id, "token": token("read:runs")}
    frame.update(fields)
    return {k: v for k, v in frame.items() if v is not None}


def _tags_sub(scene: Scene, tags: Any, tok: str | None = None, **fields: Any) -> dict[str, Any]:
    return _sub(scene, feed="tags", runId=None, tags=tags, token=tok or token("read:tags"), **fields)


ERROR_CASES: dict[str, ErrorCase] = {
    "invalid JSON": lambda s: ("{not json", "invalid_request", None),
    "non-object frame: array": lambda s: ('[{"type": "ping"}]', "invalid_request", None),
    "non-object frame: string": lambda s: ('"ping"', "invalid_request", None),
    "unknown type": lambda s: ({"type": "subscribed", "id": "x"}, "invalid_request", "x"),
    "missing type": lambda s: ({"id": "x"}, "invalid_request", "x"),
    "missing id": lambda s: (_sub(s, id=None), "invalid_request", None),
    "non-string id": lambda s: (_sub(s, id=7), "invalid_request", None),
    "empty id": lambda s: (_sub(s, id=""), "invalid_request", ""),
    "oversized id": lambda s: (_sub(s, id="i" * 65), "invalid_request", "i" * 65),
    "duplicate id": lambda s: (_sub(s, id="live"), "invalid_request", "live"),
    "unknown feed": lambda s: (_sub(s, feed="everything"), "invalid_request", "x"),
    "run feed without runId": lambda s: (_sub(s, runId=None), "invalid_request", "x"),
    "unknown run": lambda s: (_sub(s, runId=new_id("run_")), "not_found", "x"),
    "missing token": lambda s: (_sub(s, token=None), "unauthorized", "x"),
    "non-string token": lambda s: (_sub(s, token=["read:runs"]), "unauthorized", "x"),
    "empty token": lambda s: (_sub(s, token=""), "unauthorized", "x"),
    "oversized token": lambda s: (_sub(s, token="t" * 16_385), "unauthorized", "x"),
    "garbage token": lambda s: (_sub(s, token="not-a-jwt"), "unauthorized", "x"),
    "expired token": lambda s: (
        _sub(s, token=token("read:runs", expires=datetime.now(UTC) - timedelta(minutes=5))),
        "unauthorized",
        "x",
    ),
    "wrong signature": lambda s: (
        _sub(s, token=token("read:runs", secret="tr_dev_another_secret_key_0123456789")),
        "unauthorized",
        "x",
    ),
    "not a public token": lambda s: (
        _sub(
            s,
            token=jwt.encode(
                {"iss": ISSUER, "aud": AUDIENCE, "scopes": ["read:runs"], "exp": int(time.time()) + 600},
                SECRET_KEY,
                algorithm="HS256",
            ),
        ),
        "unauthorized",
        "x",
    ),
    "token for another run": lambda s: (_sub(s, token=token(f"read:runs:{s.other_run_id}")), "forbidden", "x"),
    "tags feed without a tag scope": lambda s: (
        _tags_sub(s, [s.tag], token(f"read:runs:{s.run_id}")),
        "forbidden",
        "x",
    ),
    "tags feed with another tag's scope": lambda s: (
        _tags_sub(s, [s.tag], token(f"read:tags:{unique('tag')}")),
        "forbidden",
        "x",
    ),
    "batch feed without a batch scope": lambda s: (
        _sub(s, feed="batch", runId=None, batchId=new_id("batch_"), token=token(f"read:runs:{s.run_id}")),
        "forbidden",
        "x",
    ),
    "tags feed without tags": lambda s: (_tags_sub(s, []), "invalid_request", "x"),
    "tags feed with 11 tags": lambda s: (_tags_sub(s, [f"t{i}" for i in range(11)]), "invalid_request", "x"),
    "tag of 129 characters": lambda s: (_tags_sub(s, ["t" * 129]), "invalid_request", "x"),
    "tag with a control character": lambda s: (_tags_sub(s, ["a\nb"]), "invalid_request", "x"),
    "tags not strings": lambda s: (_tags_sub(s, [1, 2]), "invalid_request", "x"),
    "invalid createdAt": lambda s: (_tags_sub(s, [s.tag], createdAt="soon"), "invalid_request", "x"),
    "negative createdAt": lambda s: (_tags_sub(s, [s.tag], createdAt=-5), "invalid_request", "x"),
    "unsubscribe unknown id": lambda s: ({"type": "unsubscribe", "id": "nope"}, "not_found", "nope"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
async def test_bad_frame_gets_an_error_with_a_stable_code_and_other_subscriptions_carry_on(
    server: RunningServer, case: str
) -> None:
    tag = unique("tag")
    other = await tasks.trigger("echo", 0)
    run_id, gate = await trigger_gated([tag])
    await until_waiting(run_id)
    scene = Scene(run_id=run_id, tag=tag, other_run_id=other.id)
    frame, code, subscription_id = ERROR_CASES[case](scene)
    topic = f"run:{run_id}"
    async with connect(server.ws_url) as client:
        await client.subscribe_run("live", run_id, token(f"read:runs:{run_id}"))
        await client.expect(of_type("snapshot", "live"))
        await client.send(frame)
        answer = await client.frames_until(lambda _: True)
        assert len(answer) == 1 and answer[0]["type"] == "error", answer
        assert answer[0]["code"] == code and answer[0]["id"] == subscription_id, answer
        assert isinstance(answer[0]["message"], str) and answer[0]["message"]

        open_gate(gate)
        frames = await client.frames_until(on_topic(topic, completed(run_id)))
        frames += await client.sync()
    assert all(f["type"] == "update" for f in frames), frames  # no late snapshot for the refused subscription


async def test_subscription_whose_snapshot_cannot_be_read_is_not_established(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`backend_unavailable` says "retry": the failed subscription must leave its id free and follow nothing."""
    broker = server.app_bridge.broker
    read = broker.runs_with_tags
    outage = [BackendUnavailableError("the bridge's backend is unavailable; retry shortly")]

    async def read_after_an_outage(tags: list[str], since_ms: int, limit: int) -> list[Run]:
        if outage:
            raise outage.pop()
        return await read(tags, since_ms, limit)

    monkeypatch.setattr(broker, "runs_with_tags", read_after_an_outage)
    tag = unique("tag")
    handle = await tasks.trigger("echo", 1, tags=[tag])
    await until_final(handle.id)  # quiet from here: the next frame is the answer to the subscribe
    async with connect(server.ws_url) as client:
        await client.subscribe_tags("t", [tag], token("read:tags"))
        refused = await client.frames_until(lambda _: True)
        assert [(f["type"], f["id"], f.get("code")) for f in refused] == [("error", "t", "backend_unavailable")]
        assert await client.sync() == []
        assert topics_of(server).topic_count == 0

        await client.subscribe_tags("t", [tag], token("read:tags"))  # the retry the error asks for
        snapshot = await client.frames_until(lambda _: True)
    assert snapshot[0]["type"] == "snapshot" and [r["id"] for r in snapshot[0]["runs"]] == [handle.id]


async def test_subscription_id_of_the_maximum_length_is_accepted(server: RunningServer) -> None:
    handle = await tasks.trigger("echo", 1)
    sid = "i" * MAX_SUBSCRIPTION_ID_LENGTH
    async with connect(server.ws_url) as client:
        await client.subscribe_run(sid, handle.id, handle.public_access_token)
        answer = await client.expect(lambda f: f.get("id") == sid)
    assert answer["type"] == "snapshot", answer


async def test_subscriptions_per_connection_are_bounded(backend_settings: Settings) -> None:
    async with server_with(backend_settings, max_subscriptions_per_connection=3) as server:
        handle = await tasks.trigger("echo", 1)
        await until_final(handle.id)  # quiet from here: each next frame answers the last request
        async with connect(server.ws_url) as client, connect(server.ws_url) as neighbour:
            assert client.welcome is not None and client.welcome["limits"]["maxSubscriptions"] == 3
            for i in range(3):
                await client.subscribe_run(f"s{i}", handle.id, handle.public_access_token)
                await client.expect(of_type("snapshot", f"s{i}"))
            await client.subscribe_run("s3", handle.id, handle.public_access_token)
            refused = await client.frames_until(lambda _: True)
            assert [(f["type"], f["id"], f.get("code")) for f in refused] == [("error", "s3", "too_many")]

            await neighbour.subscribe_run("s0", handle.id, handle.public_access_token)  # a budget per connection
            await neighbour.expect(of_type("snapshot", "s0"))

            await client.unsubscribe("s0")
            await client.expect(of_type("unsubscribed", "s0"))
            await client.subscribe_run("s3", handle.id, handle.public_access_token)
            assert (await client.frames_until(lambda _: True))[-1]["type"] == "snapshot"


async def test_frame_over_the_size_limit_closes_the_connection_with_1009(server: RunningServer) -> None:
    async with connect(server.ws_url) as client:
        assert client.welcome is not None
        limit = client.welcome["limits"]["maxFrameBytes"]
        empty = len(orjson.dumps({"type": "ping", "id": "edge", "pad": ""}))
        await client.send({"type": "ping", "id": "edge", "pad": "x" * (limit - empty)})  # exactly at the limit
        assert await client.frames_until(of_type("pong")) == [{"type": "pong", "id": "edge"}]
        await client.send({"type": "ping", "id": "over", "pad": "x" * (limit - empty + 1)})
        frames, close = await client.drain_until_closed()
    assert frames == []
    assert close is not None and close.code == 1009
    async with connect(server.ws_url) as client:  # the server carries on
        await client.send({"type": "ping", "id": "after"})
        assert await client.frames_until(of_type("pong")) == [{"type": "pong", "id": "after"}]


async def test_subscription_ends_with_token_expired_when_its_token_expires(server: RunningServer) -> None:
    tag = unique("tag")
    run_id, gate = await trigger_gated([tag])
    await until_waiting(run_id)
    short = create_public_token(SECRET_KEY, [f"read:runs:{run_id}"], expiration_time=2)
    async with connect(server.ws_url) as client:
        await client.subscribe_run("short", run_id, short)
        subscribed = time.monotonic()
        await client.subscribe_tags("control", [tag], token(f"read:tags:{tag}"))
        await client.expect(of_type("snapshot", "short"))
        control = (await client.expect(of_type("snapshot", "control")))["topic"]

        expired = await client.frames_until(error("token_expired", "short"), timeout=10)
        assert time.monotonic() - subscribed < 4  # the token said 2 s (whole seconds, so 1 to 2 s)
        assert [f["type"] for f in expired] == ["error"]

        open_gate(gate)
        frames = await client.frames_until(on_topic(control, completed(run_id)))
        frames += await client.sync()
        assert topic_frames(frames, f"run:{run_id}") == []

        await client.subscribe_run("short", run_id, token(f"read:runs:{run_id}"))  # the id is free again
        again = await client.expect(of_type("snapshot", "short"))
    assert again["runs"][0]["status"] == "COMPLETED"


# slow consumers

FLOOD_RUNS = 40
FLOOD_PAYLOAD_BYTES = 100_000  # each COMPLETED frame carries payload and output: ~270 kB, 40 runs ~16 MB
# Payloads and outputs of 128 KiB or more are packets, and a run's frames carry only their path: these tests
# keep them in the run, so the frames really are big.
INLINE = {"packet_threshold_bytes": 10 * 1024 * 1024}


async def _flood(tag_sets: list[str], healthy: WsClient, topic: str) -> list[str]:
    """Runs with big payloads, one after the other; `healthy` (reading) confirms each one's completion."""
    ids = []
    for i in range(FLOOD_RUNS):
        handle = await tasks.trigger("echo", {"i": i, "pad": incompressible(FLOOD_PAYLOAD_BYTES)}, tags=tag_sets)
        ids.append(handle.id)
        await healthy.frames_until(on_topic(topic, completed(handle.id)), timeout=30)
    return ids


@pytest.mark.parametrize(
    "bound", [{"send_queue_max_frames": 8}, {"send_queue_max_bytes": 1_000_000}], ids=["frames", "bytes"]
)
async def test_consumer_over_the_send_queue_bound_is_closed_with_4008(
    backend_settings: Settings, bound: dict[str, int]
) -> None:
    async with server_with(backend_settings, slow_consumer_grace_seconds=30, **bound, **INLINE) as server:
        tag = unique("slow")
        tok = token(f"read:tags:{tag}")
        async with stalled_client(server) as slow, connect(server.ws_url, max_size=None) as healthy:
            await slow.subscribe_tags("slow", [tag], tok)
            await slow.expect(of_type("snapshot", "slow"))
            await healthy.subscribe_tags("healthy", [tag], tok)
            topic = (await healthy.expect(of_type("snapshot", "healthy")))["topic"]
            ids = await _flood([tag], healthy, topic)  # `slow` reads nothing meanwhile
            frames, close = await slow.drain_until_closed(timeout=30)
        assert close is not None, "the connection ended without a close frame"
        assert close.code == CLOSE_SLOW_CONSUMER and "send queue" in close.reason
        assert slow_consumer_closes(server) == {"queue_full": 1, "send_timeout": 0}  # on /metrics
        finished = {r["id"] for f in frames for r in runs_in(f) if r["status"] == "COMPLETED"}
        assert len(finished) < FLOOD_RUNS  # the queue was cut at its bound, not kept growing

        async with connect(server.ws_url, max_size=None) as fresh:  # the server is healthy for a new client
            await fresh.subscribe_run("again", ids[-1], tok)
            snapshot = await fresh.expect(of_type("snapshot", "again"))
        assert [(r["id"], r["status"]) for r in snapshot["runs"]] == [(ids[-1], "COMPLETED")]


PIPELINED_PINGS = 20_000


async def test_client_pipelining_frames_while_reading_gets_every_reply_and_stays_open(server: RunningServer) -> None:
    """Each ping queues a pong: read as fast as they came, 20,000 pings overran the 1,000-frame send queue
    (closed with 4008, on loopback before a single pong was sent). The server now stops reading instead."""
    async with connect(server.ws_url) as client:

        async def pipeline() -> None:
            for n in range(PIPELINED_PINGS):
                await client.send({"type": "ping", "id": f"p{n}"})

        async with asyncio.timeout(60):
            _, frames = await asyncio.gather(
                pipeline(), client.frames_until(of_type("pong", f"p{PIPELINED_PINGS - 1}"), timeout=60)
            )
        assert frames == [{"type": "pong", "id": f"p{n}"} for n in range(PIPELINED_PINGS)]
        assert await client.sync() == []  # still open


async def test_client_pipelining_frames_without_reading_is_still_released_after_the_send_grace(
    backend_settings: Settings,
) -> None:
    """Not receiving its frames while the outbox is full must not keep a client that reads nothing served:
    the sender's grace still lets go of it."""
    grace = 0.5
    async with server_with(backend_settings, slow_consumer_grace_seconds=grace) as server:
        handlers = server.uvicorn.server_state.tasks
        others = set(handlers)
        async with stalled_client(server) as slow:
            (handler,) = set(handlers) - others  # the server's task serving `slow`

            async def pipeline() -> None:  # until the server stops reading: its sends then block
                for n in range(10_000):
                    await slow.send({"type": "ping", "id": f"{n:06}" + "x" * 100_000})  # a 100 kB pong each

            sending = asyncio.create_task(pipeline())
            try:
                await asyncio.wait({handler}, timeout=30)
                assert handler.done(), "the connection of a client that reads nothing is still served"
            finally:
                sending.cancel()
                await asyncio.wait({sending})
            # No close frame could be written behind the data the client left unread (as in the next test);
            # reading lets that data go and the connection end.
            frames, close = await slow.drain_until_closed(timeout=30)
        assert close is None or close.code == CLOSE_SLOW_CONSUMER
        assert 0 < len(frames) < 10_000  # the pongs were cut, not all queued


async def test_consumer_that_stops_reading_is_released_after_the_send_grace(backend_settings: Settings) -> None:
    grace = 0.5
    async with server_with(backend_settings, slow_consumer_grace_seconds=grace, **INLINE) as server:
        tag, watched = unique("slow"), unique("watched")
        router = topics_of(server)
        handlers = server.uvicorn.server_state.tasks
        others = set(handlers)
        async with stalled_client(server) as slow:
            (handler,) = set(handlers) - others  # the server's task serving `slow`
            await slow.subscribe_tags("slow", [tag], token(f"read:tags:{tag}"))
            await slow.expect(of_type("snapshot", "slow"))
            async with connect(server.ws_url, max_size=None) as healthy:
                await healthy.subscribe_tags("healthy", [tag, watched], token(f"read:tags:{tag}"))
                topic = (await healthy.expect(of_type("snapshot", "healthy")))["topic"]
                assert router.topic_count == 2
                await _flood([tag, watched], healthy, topic)  # `slow` reads nothing meanwhile
                # One send blocked for the grace, then the close waits the grace for room: the server lets go of
                # the connection within 2 x grace of the stall (the flood itself takes longer than that).
                await asyncio.wait({handler}, timeout=2 * grace + 5)
                assert handler.done(), "the stalled connection is still served"
                assert router.topic_count == 1  # its subscription is gone; the healthy one's stays
                # Counted once, by what gave it away first: a send blocked for the grace, or the queue's bound.
                assert sum(slow_consumer_closes(server).values()) == 1

                last = await tasks.trigger("echo", "after", tags=[tag, watched])
                await healthy.frames_until(on_topic(topic, completed(last.id)))

            frames, close = await slow.drain_until_closed(timeout=30)
        finished = {r["id"] for f in frames for r in runs_in(f) if r["status"] == "COMPLETED"}
        assert len(finished) < FLOOD_RUNS and last.id not in finished
        # The close frame cannot be queued behind data the client never takes (uvicorn waits for room before it
        # writes one), so a client that stalled for good sees the connection end without a code.
        assert close is None or close.code == CLOSE_SLOW_CONSUMER


async def test_slow_reader_gets_fewer_frames_of_a_busy_run_ending_at_its_latest_state(
    backend_settings: Settings,
) -> None:
    steps = 60
    async with server_with(backend_settings, slow_consumer_grace_seconds=60, **INLINE) as server:
        tag = unique("busy")
        async with stalled_client(server) as slow:
            await slow.subscribe_tags("busy", [tag], token(f"read:tags:{tag}"))
            topic = (await slow.expect(of_type("snapshot", "busy")))["topic"]
            handle = await tasks.trigger("progress", {"steps": steps, "pad": incompressible(150_000)}, tags=[tag])
            await until_final(handle.id)  # every change happened while `slow` read nothing
            frames = await slow.frames_until(on_topic(topic, completed(handle.id)), timeout=30)
            frames += await slow.sync(timeout=30)
    states = [r for f in frames for r in runs_in(f) if r["id"] == handle.id]
    versions = [r["version"] for r in states]
    assert versions == sorted(set(versions))
    assert len(states) < steps + 3  # queued, executing, one per metadata.set, completed: some were coalesced
    final = states[-1]
    assert final["version"] == steps + 3 and final["status"] == "COMPLETED"
    assert final["metadata"] == {"progress": 1.0} and final["output"] == {"steps": steps}
