"""The delivery path (docs/architecture.md, "The delivery path"): under `realtime-bridge serve` frames
prepared once are written straight to each connection's transport (the raw frame path, `FramesProtocol`);
under another server (the bridge mounted in an app) they go through ASGI. Both deliver the same frames; a
reader that stalls then reads again gets every frame once, in order, none overtaking a queued one; a stalled
reader is closed with 4008 after the grace while the others keep receiving.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from bridge.backends.channels import run_channel
from bridge.config import Settings
from bridge.models import Run
from bridge.runtime.engine import TriggerOptions
from bridge.server.websocket.connection import Connection
from bridge.server.websocket.protocol import CLOSE_SLOW_CONSUMER
from bridge.server.websocket.transport import FramesProtocol
from tests.conftest import RunningServer, serving
from tests.support.helpers import token, unique
from tests.support.lean_ws import Frame, LeanWebSocket, close_all

# The raw frame path is `serving`'s default, as `realtime-bridge serve`'s; "asgi" is the fallback a host app's
# server gives (uvicorn's own WebSocket protocol, no scope extension).
PATHS: dict[str, dict[str, Any]] = {"raw": {}, "asgi": {"ws": "websockets-sansio"}}
PAD = "x" * 8000  # per run: ~8 kB frames, so a stalled reader's buffers fill after a few dozen
BUFFER = 4096  # the server's SO_SNDBUF and the stalled client's SO_RCVBUF
TIMEOUT = 30.0


@pytest.fixture(params=list(PATHS))
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def served_paths(server: RunningServer) -> list[str]:
    """How the server's open WebSocket connections are served."""
    return [
        "raw" if isinstance(protocol, FramesProtocol) and protocol.raw_frames is not None else "asgi"
        for protocol in server.uvicorn.server_state.connections
        if isinstance(protocol, WebSocketsSansIOProtocol)
    ]


def connections(server: RunningServer) -> list[Connection]:
    """The server's WebSocket connections that follow a topic."""
    router = server.uvicorn.config.app.state.topics
    return [follower for topic in router._topics.values() for follower in topic.followers]


class Reader:
    """A LeanWebSocket's frames, and an event per condition waited for."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self._waits: list[tuple[Any, asyncio.Event]] = []

    def on_frame(self, frame: Frame) -> None:
        self.frames.append(frame)
        for condition, event in self._waits:
            if condition(self.frames):
                event.set()

    async def until(self, condition: Any, timeout: float = TIMEOUT) -> None:
        event = asyncio.Event()
        if not condition(self.frames):
            self._waits.append((condition, event))
            try:
                async with asyncio.timeout(timeout):
                    await event.wait()
            except TimeoutError:
                raise AssertionError(f"not received in {timeout:g} s; received: {self.frames[-3:]}") from None

    async def until_updates(self, count: int) -> None:
        await self.until(lambda frames: len(self.updated_runs()) >= count)

    def updated_runs(self) -> list[str]:
        return [frame["run"]["id"] for frame in self.frames if frame["type"] == "update"]


def lost(server: RunningServer, client: LeanWebSocket) -> asyncio.Event:
    """Set once the server's side of `client`'s connection is lost (its socket closed)."""
    port = client.local_port
    (protocol,) = [p for p in server.uvicorn.server_state.connections if p.client and p.client[1] == port]
    event, connection_lost = asyncio.Event(), protocol.connection_lost

    def losing(exc: Exception | None) -> None:
        connection_lost(exc)
        event.set()

    protocol.connection_lost = losing  # type: ignore[method-assign]
    return event


def port_of(server: RunningServer) -> int:
    return int(server.url.rsplit(":", 1)[1])


async def test_the_raw_path_and_the_asgi_fallback_deliver_the_same_frames(backend_settings: Settings) -> None:
    received: dict[str, list[Frame]] = {}
    for path, options in PATHS.items():
        settings = replace(backend_settings, key_prefix=f"{backend_settings.key_prefix}{path}")
        async with serving(settings, with_worker=False, **options) as server:
            run = Run(id="run_same_frames", task_identifier="delivery", metadata={"step": 0}, created_at=1)
            await server.app_bridge.broker.insert_run(run, None, 60)
            reader = Reader()
            client = await LeanWebSocket.connect(port_of(server), reader.on_frame)
            try:
                client.send(
                    {
                        "type": "subscribe",
                        "id": "r",
                        "feed": "run",
                        "runId": run.id,
                        "token": token(f"read:runs:{run.id}"),
                    }
                )
                await reader.until(lambda frames: any(f["type"] == "snapshot" for f in frames))
                assert served_paths(server) == [path]
                for step in range(1, 6):  # the same stored changes, published through each server's hub
                    changed = replace(run, metadata={"step": step}, version=step + 1, updated_at=step + 1)
                    server.app_bridge.hub._dispatch(run_channel(run.id), changed.to_storage())
                    await reader.until_updates(step)  # one at a time: a reader that keeps up gets each
            finally:
                await close_all([client])
            received[path] = reader.frames
    assert [f["type"] for f in received["raw"]] == ["welcome", "snapshot", *["update"] * 5]
    assert [f["run"]["metadata"]["step"] for f in received["raw"][2:]] == [1, 2, 3, 4, 5]
    assert received["raw"] == received["asgi"]


async def trigger_tagged(server: RunningServer, tag: str, count: int) -> list[str]:
    """Creates `count` runs with `tag`, one after the other; no worker runs them: one change each."""
    await server.app_bridge.broker.register_tasks(["delivery"])
    ids = []
    for _ in range(count):
        run, _ = await server.app_bridge.engine.trigger("delivery", {"pad": PAD}, TriggerOptions(tags=[tag]))
        ids.append(run.id)
    return ids


async def test_a_reader_that_stalls_then_reads_again_gets_every_frame_in_order(
    backend_settings: Settings, path: str
) -> None:
    """Distinct runs are never coalesced: every one's frame arrives, in the order the runs were created, those
    queued while the reader stalled before those written after it read again."""
    limits = replace(backend_settings.limits, slow_consumer_grace_seconds=60)
    settings = replace(backend_settings, limits=limits)
    async with serving(settings, with_worker=False, send_buffer=BUFFER, **PATHS[path]) as server:
        tag = unique("order")
        reader = Reader()
        client = await LeanWebSocket.connect(port_of(server), reader.on_frame, receive_buffer=BUFFER)
        try:
            subscribe = {
                "type": "subscribe",
                "id": "t",
                "feed": "tags",
                "tags": [tag],
                "token": token(f"read:tags:{tag}"),
            }
            client.send(subscribe)
            await reader.until(lambda frames: any(f["type"] == "snapshot" for f in frames))
            client.pause_reading()
            stalled = await trigger_tagged(server, tag, 150)
            (connection,) = connections(server)
            assert len(connection.outbox) > 0, "the reader never went slow: nothing was queued"
            client.resume_reading()
            after = await trigger_tagged(server, tag, 20)
            await reader.until_updates(len(stalled) + len(after))
            assert reader.updated_runs() == stalled + after
            assert not connection.outbox
        finally:
            await close_all([client])


async def test_a_stalled_reader_is_closed_after_the_grace_while_the_others_keep_receiving(
    backend_settings: Settings, path: str
) -> None:
    grace = 0.5
    settings = replace(backend_settings, limits=replace(backend_settings.limits, slow_consumer_grace_seconds=grace))
    async with serving(settings, with_worker=False, send_buffer=BUFFER, **PATHS[path]) as server:
        tag = unique("stall")
        subscribe = {"type": "subscribe", "id": "t", "feed": "tags", "tags": [tag], "token": token(f"read:tags:{tag}")}
        healthy, stalled = Reader(), Reader()
        clients = [
            await LeanWebSocket.connect(port_of(server), healthy.on_frame),
            await LeanWebSocket.connect(port_of(server), stalled.on_frame, receive_buffer=BUFFER),
        ]
        try:
            for client, reader in zip(clients, (healthy, stalled), strict=True):
                client.send(subscribe)
                await reader.until(lambda frames: any(f["type"] == "snapshot" for f in frames))
            clients[1].pause_reading()
            stalled_lost = lost(server, clients[1])
            sent: list[str] = []
            async with asyncio.timeout(TIMEOUT):
                while len(connections(server)) == 2:  # one run at a time until the stalled reader is let go
                    sent += await trigger_tagged(server, tag, 1)
                    await healthy.until_updates(len(sent))
            sent += await trigger_tagged(server, tag, 3)
            await healthy.until_updates(len(sent))
            assert healthy.updated_runs() == sent  # every one, in order, before and after the close
            closes = server.app_bridge.metrics.registry.get_sample_value
            assert closes("bridge_slow_consumer_closes_total", {"reason": "send_timeout"}) == 1
            assert closes("bridge_slow_consumer_closes_total", {"reason": "queue_full"}) == 0
            if path == "raw":  # cut a grace after its close though it still reads nothing (docs/limits.md)
                async with asyncio.timeout(TIMEOUT):
                    await stalled_lost.wait()
                assert len(server.uvicorn.server_state.connections) == 1
            clients[1].resume_reading()
            async with asyncio.timeout(TIMEOUT):
                assert await clients[1].closed in (CLOSE_SLOW_CONSUMER, None)  # no room for a close frame: cut
            assert 0 < len(stalled.updated_runs()) < len(sent)
        finally:
            await close_all(clients)
