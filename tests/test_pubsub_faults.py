"""A bridge's Redis pub/sub connection dies without the bridge being told, while a task writes.

Two faults, each between a bridge that serves readers (WebSocket and SDK) and its Redis: Redis drops
the connection (`CLIENT KILL TYPE pubsub`), or a TCP proxy on the path stops forwarding both ways
with every connection left open (a dead network path: only the pub/sub PING notices). The writer is
another bridge with its own worker, straight on Redis, so it goes on writing throughout.

What a user relies on: `/readyz` is red while the bridge cannot hear changes; within 10 s of the
fault ending, subscribers get changes again, and one that stays subscribed has missed nothing: the
run's latest state, and every chunk of its stream once, in order. In the stall, the run ends while
the bridge hears nothing and nothing is written after it: only the resync (re-reading state once the
connection is back) can bring those changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
from redis.asyncio import Redis

from bridge.backends.redis import RedisBroker
from bridge.backends.redis import pubsub as redis_pubsub
from bridge.runtime import state
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.server.health import READY_TIMEOUT_SECONDS
from bridge.testing.redis_server import RedisServer
from bridge.worker.executor import Worker
from tests.conftest import RunningServer, serving, suite_settings
from tests.support.helpers import open_gate, token, unique
from tests.support.tasks import Ticks, registry, ticks_by_gate
from tests.support.tcp_proxy import TcpProxy
from tests.support.ws_client import Frame, WsClient, connect, of_type, runs_in

HEAL_DEADLINE = 10.0  # from the end of the fault until every subscriber has caught up
# The pub/sub PING's interval and timeout, scaled down from 5 s and 3 s to keep the test short, but
# slower than /readyz's own bound, which must answer (red) before the pinger notices.
PING_INTERVAL = 2.0
PING_TIMEOUT = 1.0
TICK_SECONDS = 0.01
TIMEOUT = 30.0


@dataclass
class Watcher:
    """One WebSocket client following a run and its "ticks" stream: every chunk must be the next index."""

    client: WsClient
    run: Frame | None = None  # the newest state seen (highest version)
    chunks: int = 0
    end: Frame | None = None
    errors: list[Frame] = field(default_factory=list)
    broken: str | None = None  # a chunk out of order: the test fails with it
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def follow(self) -> None:
        while True:
            pending = self.client.pending
            frame = pending.popleft() if pending else orjson.loads(await self.client.connection.recv())
            if frame["type"] == "chunk":
                if frame["index"] != self.chunks or frame["data"] != self.chunks:
                    self.broken = f"chunk {frame['index']} ({frame['data']!r}) where {self.chunks} was due"
                    self.changed.set()
                    return
                self.chunks += 1
            elif frame["type"] == "end":
                self.end = frame
            elif frame["type"] == "error":
                self.errors.append(frame)
            for run in runs_in(frame):
                if self.run is None or run["version"] > self.run["version"]:
                    self.run = run
            self.changed.set()

    async def until(self, reached: Callable[[Watcher], bool], timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not reached(self):
                assert self.broken is None, self.broken
                self.changed.clear()
                await self.changed.wait()


def caught_up(watcher: Watcher) -> bool:
    """The run finished, its latest state and the stream's end arrived."""
    run = watcher.run
    return run is not None and run["status"] == "COMPLETED" and watcher.end is not None


@contextlib.asynccontextmanager
async def subscribed(server: RunningServer, run_id: str) -> AsyncIterator[Watcher]:
    tok = token(f"read:runs:{run_id}")
    async with connect(server.ws_url) as client:
        await client.subscribe_run("run", run_id, tok)
        await client.expect(of_type("snapshot", "run"))
        await client.send({"type": "subscribe", "id": "ticks", "feed": "stream", "runId": run_id, "key": "ticks",
                           "token": tok})  # fmt: skip
        watcher = Watcher(client)
        following = asyncio.create_task(watcher.follow())
        try:
            yield watcher
        finally:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)


async def read_all(bridge: Bridge, run_id: str) -> list[Any]:
    """Every chunk, through a stream reader in `bridge` (what the SDK's `streams.read` runs)."""
    async with asyncio.timeout(TIMEOUT), bridge.output_streams.reader(run_id, "ticks") as reader:
        return [chunk.value() async for chunk in reader.chunks()]


@pytest.mark.parametrize("fault", ["client-kill", "stall"])
async def test_subscribers_heal_within_10s_of_a_silently_dead_pubsub_connection(
    own_redis_server: RedisServer, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_pubsub, "PUBSUB_PING_INTERVAL_SECONDS", PING_INTERVAL)
    monkeypatch.setattr(redis_pubsub, "PUBSUB_PING_TIMEOUT_SECONDS", PING_TIMEOUT)
    redis = own_redis_server
    prefix = unique("pubsubfault")
    proxy = TcpProxy(redis.port)
    await proxy.start()
    writer = Bridge(suite_settings(redis_url=redis.url, key_prefix=prefix))
    await writer.start()
    worker = Worker(writer, registry)
    await worker.start()
    direct = Redis.from_url(redis.url)
    try:
        async with serving(suite_settings(redis_url=proxy.url, key_prefix=prefix), with_worker=False) as server:
            broker = server.app_bridge.broker
            assert isinstance(broker, RedisBroker)
            state.use(writer)  # the task's SDK calls go to the writer, not to the server started last
            gate = unique("gate")
            written = ticks_by_gate[gate] = Ticks()
            payload = {"gate": gate, "interval": TICK_SECONDS}
            run, _ = await writer.engine.trigger("tick-until-gate", payload, TriggerOptions())
            async with subscribed(server, run.id) as watcher, httpx.AsyncClient(base_url=server.url) as http:
                reading = asyncio.create_task(read_all(server.app_bridge, run.id))
                await watcher.until(lambda w: w.chunks >= 5, TIMEOUT)  # changes flow
                if fault == "client-kill":
                    killed = await direct.client_kill_filter(_type="pubsub")
                    assert killed >= 2  # the server's pub/sub connection and the writer's
                    open_gate(gate)  # the run's last changes, most likely while the server resubscribes
                else:
                    proxy.stall()
                    # /readyz is red at once (its PING is bounded); then the pinger notices, and it stays red.
                    probed = time.monotonic()
                    assert (await http.get("/readyz", timeout=PING_INTERVAL * 5)).status_code == 503
                    assert time.monotonic() - probed < READY_TIMEOUT_SECONDS + 1
                    await asyncio.wait_for(broker._subscriptions.down.wait(), PING_INTERVAL + PING_TIMEOUT + 5)
                    assert (await http.get("/readyz", timeout=5)).status_code == 503
                    await written.until(written.written + 20)  # changes published while nobody hears them...
                    open_gate(gate)
                    await asyncio.wait_for(worker.released(run.id), TIMEOUT)  # ...up to the run's end
                    assert (await http.get("/readyz", timeout=5)).status_code == 503
                    proxy.resume()  # nothing is written from now on: only the resync can bring it
                fault_ended = time.monotonic()
                await watcher.until(caught_up, HEAL_DEADLINE)
                healed = time.monotonic() - fault_ended
                count = watcher.chunks
                assert watcher.run is not None and watcher.run["metadata"] == {"tick": count - 1}
                assert watcher.run["output"] == count == written.written and watcher.end == {
                    "type": "end", "id": "ticks", "nextIndex": count, "reason": "finished"
                }  # fmt: skip
                assert watcher.errors == []  # it stayed subscribed: no error, no resubscribe
                assert await asyncio.wait_for(reading, HEAL_DEADLINE) == list(range(count))
                assert (await http.get("/readyz", timeout=5)).status_code == 200
            print(f"\n{fault}: subscribers caught up {healed:.2f} s after the fault ended ({count} ticks)")
            assert healed < HEAL_DEADLINE
    finally:
        await direct.aclose()
        await worker.stop()
        await writer.stop()
        await proxy.stop()
