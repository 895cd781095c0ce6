"""What only a Redis Cluster does: a master failing over (killed, or handed over), replicated writes,
the cluster URL, and the command bound of redis-py's cluster client.

The behavioural suite runs on a cluster too (the `cluster` marker, tests/conftest.py); these tests
own a cluster of their own, since they kill and demote its masters.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import httpx
import orjson
import pytest
from redis.exceptions import MovedError

from bridge import cli, tasks
from bridge.backends import create_broker
from bridge.backends.base import Broker
from bridge.backends.channels import run_channel
from bridge.backends.redis import RedisBroker, connection, replicated
from bridge.backends.redis.cluster import BoundedCluster, parse_cluster_url
from bridge.config import Settings
from bridge.errors import BackendUnavailableError
from bridge.models import RunStatus
from tests.conftest import RunningServer, serving, suite_settings
from tests.support.helpers import event_index, open_gate, sse_events, token, unique, until_final
from tests.support.redis_cluster import RedisClusterNodes, start_redis_cluster
from tests.support.ws_client import connect

TIMEOUT = 60.0  # for anything awaited: generous, only reached when the test fails
RESUMES = 20  # a reader resubscribes (or reconnects) at most this often
RECONNECT_PAUSE_SECONDS = 0.2  # an SSE reader's pause before it reconnects, as the official client's backoff


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[RedisClusterNodes]:
    cluster = start_redis_cluster()
    yield cluster
    cluster.stop()


@pytest.fixture
async def broker(own_cluster: RedisClusterNodes) -> AsyncIterator[Broker]:
    broker = create_broker(suite_settings(redis_url=own_cluster.url, key_prefix=unique("rbc")))
    await broker.start()
    try:
        yield broker
    finally:
        await broker.stop()


def test_a_cluster_url_lists_any_of_its_nodes() -> None:
    assert parse_cluster_url("redis+cluster://10.0.0.1:7000") == ([("10.0.0.1", 7000)], None, None)
    assert parse_cluster_url("redis+cluster://bridge:p%40ss@a:7000,b:7001,[::1]:7002/") == (
        [("a", 7000), ("b", 7001), ("::1", 7002)],
        "bridge",
        "p@ss",
    )
    for bad in ("redis+cluster://", "redis+cluster://a", "redis+cluster://a:x", "redis+cluster://a:1,:2"):
        with pytest.raises(ValueError, match="host:port"):
            parse_cluster_url(bad)


def test_the_cli_reads_the_replicas_to_wait_for(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SECRET_KEY", "tr_dev_cli_cluster_0123456789abcdef01")
    parser = argparse.ArgumentParser()
    cli._common(parser)
    monkeypatch.setenv("BRIDGE_REDIS_WAIT_REPLICAS", "1")
    settings = cli._settings(parser.parse_args(["--redis-url", "redis+cluster://127.0.0.1:7000"]))
    assert (settings.redis_url, settings.redis_wait_replicas) == ("redis+cluster://127.0.0.1:7000", 1)
    monkeypatch.setenv("BRIDGE_REDIS_WAIT_REPLICAS", "-1")
    with pytest.raises(cli.CliError, match="BRIDGE_REDIS_WAIT_REPLICAS is 0 or more"):
        cli._settings(parser.parse_args([]))


async def read_ws(server: RunningServer, run_id: str, count: int, progress: asyncio.Event, at: int) -> list[Any]:
    """Every chunk through WebSocket stream subscriptions; a subscription the backend failed (an `error`
    frame) is taken up again from the next index, as the hooks do."""
    received: list[Any] = []
    async with connect(server.ws_url, max_size=None) as client:
        for attempt in range(RESUMES):
            sub = f"s{attempt}"
            subscribe = {"type": "subscribe", "id": sub, "feed": "stream", "runId": run_id, "key": "numbers",
                         "startIndex": len(received), "token": token(f"read:runs:{run_id}")}  # fmt: skip
            await client.send(subscribe)
            while True:
                (frame,) = await client.frames_until(lambda f, sub=sub: f.get("id") == sub, TIMEOUT)
                if frame["type"] == "chunk":
                    assert frame["index"] == len(received), frame
                    received.append(frame["data"])
                    if len(received) == at:
                        progress.set()
                elif frame["type"] == "end":
                    assert frame == {"type": "end", "id": sub, "nextIndex": count, "reason": "finished"}
                    return received
                else:
                    assert frame["type"] == "error" and frame["code"] == "backend_unavailable", frame
                    break
    raise AssertionError(f"the WebSocket reader was cut off more than {RESUMES} times")


async def read_sse(http: httpx.AsyncClient, run_id: str, count: int, progress: asyncio.Event, at: int) -> list[Any]:
    """Every chunk through the official SSE route, reconnecting with Last-Event-ID as the official client does."""
    received: list[Any] = []
    headers = {"Authorization": f"Bearer {token(f'read:runs:{run_id}')}"}
    epoch = ""  # from the event ids (`<index>-<epoch>`): a resume into lost storage would be refused
    for _ in range(RESUMES):
        headers["Last-Event-ID"] = f"{len(received) - 1}-{epoch}" if epoch else str(len(received) - 1)
        try:
            async with http.stream("GET", f"/realtime/v1/streams/{run_id}/numbers", headers=headers) as response:
                if response.status_code == 200:
                    async for event_id, value in sse_events(response):
                        epoch = event_id.partition("-")[2]
                        assert event_index(event_id) == len(received), (event_id, len(received))
                        received.append(value)
                        if len(received) == at:
                            progress.set()
                else:
                    assert response.status_code == 503, response.status_code
        except httpx.RemoteProtocolError:  # cut: its reader failed; the official client resumes
            pass
        if len(received) == count:
            return received
        await asyncio.sleep(RECONNECT_PAUSE_SECONDS)  # a client's backoff before it reconnects, not a sync
    raise AssertionError(f"the SSE reader was cut off more than {RESUMES} times")


async def test_a_killed_master_fails_over_and_readers_resume_with_every_acknowledged_chunk(
    own_cluster: RedisClusterNodes,
) -> None:
    """The master holding a run is SIGKILLed while its task streams and a WebSocket and an SSE reader
    follow. Its replica takes over; the killed node comes back as the new master's replica (with
    `BRIDGE_REDIS_WAIT_REPLICAS=1` a master without a replica takes no acknowledged write). Every
    chunk is stored once, in order, and both readers get each once, in order."""
    settings = suite_settings(redis_url=own_cluster.url, key_prefix=unique("failover"), redis_wait_replicas=1)
    count, gate_at, gate = 400, 100, unique("gate")
    async with serving(settings) as server, httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        handle = await tasks.trigger(
            "stream-chunks", {"count": count, "burst": 10, "pause": 0.1, "gate": gate, "gate_at": gate_at}
        )
        master = own_cluster.master_of(f"{settings.key_prefix}:{{{handle.id}}}:run")
        ws_progress, sse_progress = asyncio.Event(), asyncio.Event()
        async with asyncio.timeout(TIMEOUT):
            readers = asyncio.gather(
                read_ws(server, handle.id, count, ws_progress, gate_at),
                read_sse(http, handle.id, count, sse_progress, gate_at),
            )
            try:
                await ws_progress.wait()
                await sse_progress.wait()
                await asyncio.to_thread(master.kill)
                open_gate(gate)  # the task streams the other 300 while its master is gone
                await asyncio.to_thread(own_cluster.wait_until_failed_over, master)
                await asyncio.to_thread(master.start_again)  # back as a replica: writes are acknowledged again
                ws_read, sse_read = await readers
            except BaseException:
                readers.cancel()
                raise
            final = await until_final(handle.id)
        assert final.status is RunStatus.COMPLETED and final.output == count, final
        assert ws_read == sse_read == list(range(count))
        broker = server.app_bridge.broker
        stored = [
            orjson.loads(c) for c in (await broker.read_chunks(handle.id, "numbers", 0, count + 1, 1 << 24)).chunks
        ]
        assert stored == list(range(count))
        assert own_cluster.master_of(f"{settings.key_prefix}:{{{handle.id}}}:run") is not master
    await asyncio.to_thread(own_cluster.wait_until_healthy)


async def test_a_handed_over_slot_moves_its_subscriptions_and_writes_to_the_new_master(
    own_cluster: RedisClusterNodes, broker: Broker
) -> None:
    """A manual failover keeps every connection open: the demoted master drops the channels of its slots
    (`sunsubscribe`), and the broker resubscribes on the new master and resyncs its listeners; a
    replicated write sent to the demoted master by a client that has not heard of it yet follows its
    MOVED answer."""
    assert isinstance(broker, RedisBroker)
    messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    resynced = asyncio.Event()
    broker.set_listener(lambda channel, data: messages.put_nowait((channel, data)), resynced.set)
    channel = run_channel("run_handed_over")
    await broker.listen([channel])
    writer = create_broker(replace(broker.settings, redis_wait_replicas=1))
    await writer.start()
    try:
        assert await writer.append_chunks("run_handed_over", "out", [b"0"], 0) == 0
        master = own_cluster.master_of(broker._conn.keys.wire(channel))
        replica = await asyncio.to_thread(own_cluster.hand_over, master)
        async with asyncio.timeout(TIMEOUT):
            await resynced.wait()
        assert own_cluster.master_of(broker._conn.keys.wire(channel)) is replica
        await broker.publish(channel, b"after")
        async with asyncio.timeout(TIMEOUT):
            assert await messages.get() == (channel, b"after")
        assert await writer.append_chunks("run_handed_over", "out", [b"1"], 1) == 1
        assert (await broker.read_chunks("run_handed_over", "out", 0, 10, 1 << 20)).chunks == [b"0", b"1"]
    finally:
        await writer.stop()
    await asyncio.to_thread(own_cluster.wait_until_healthy)


async def test_an_acknowledged_write_its_replicas_do_not_confirm_fails_as_unavailable(
    own_cluster: RedisClusterNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each master has one replica: asking for two, an append is refused (503) after the replica wait,
    and a writer retrying it (same chunk, same index) is answered once the ask can be met."""
    monkeypatch.setattr(replicated, "REPLICA_WAIT_MS", 200)
    prefix = unique("wait")
    settings: Settings = suite_settings(redis_url=own_cluster.url, key_prefix=prefix, redis_wait_replicas=2)
    strict = create_broker(settings)
    await strict.start()
    try:
        with pytest.raises(BackendUnavailableError, match="1 of 2 replicas acknowledged a write within 200 ms"):
            await strict.append_chunks("run_wait", "out", [b"1"], 0)
    finally:
        await strict.stop()
    enough = create_broker(suite_settings(redis_url=own_cluster.url, key_prefix=prefix, redis_wait_replicas=1))
    await enough.start()
    try:
        assert await enough.append_chunks("run_wait", "out", [b"1"], 0) == 0  # stored by the refused call: kept once
        assert (await enough.read_chunks("run_wait", "out", 0, 10, 1 << 20)).chunks == [b"1"]
    finally:
        await enough.stop()


async def test_a_write_redirected_without_end_fails_as_unavailable(
    own_cluster: RedisClusterNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = 0

    async def always_moved(*_: object) -> tuple[Exception, int]:
        nonlocal answers
        answers += 1
        return MovedError("1 127.0.0.1:1"), 0

    monkeypatch.setattr(replicated.ReplicatedWrites, "_with_wait", always_moved)
    settings = suite_settings(redis_url=own_cluster.url, key_prefix=unique("moved"), redis_wait_replicas=1)
    broker = create_broker(settings)
    await broker.start()
    try:
        with pytest.raises(BackendUnavailableError, match="redirected more than 5 times"):
            await broker.append_chunks("run_moved", "out", [b"1"], 0)
        assert answers == replicated.REDIRECTS
    finally:
        await broker.stop()


async def test_commands_past_the_connection_bound_wait_for_a_turn(
    own_cluster: RedisClusterNodes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's cluster nodes fail a command past their pool's bound at once; ours wait for a turn."""
    monkeypatch.setattr(connection, "COMMAND_POOL_MAX_CONNECTIONS", 2)
    broker = create_broker(suite_settings(redis_url=own_cluster.url, key_prefix=unique("bound")))
    await broker.start()
    try:
        assert isinstance(broker, RedisBroker) and isinstance(broker._conn.redis, BoundedCluster)
        assert await asyncio.gather(*(broker.get_run(f"run_{n}") for n in range(50))) == [None] * 50
        assert all(len(node._connections) <= 2 for node in broker._conn.redis.get_nodes())
    finally:
        await broker.stop()
