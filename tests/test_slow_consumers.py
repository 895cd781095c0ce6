"""5% of 1,000 WebSocket clients stop reading while a task updates the run all 1,000 follow.

What users rely on: every client that reads gets the run's updates in order (versions only grow) and
its final state; each stalled client is closed with 4008 once one send to it has waited the grace;
and no connection's send queue grows with the number of updates (it coalesces per run), so stalled
clients cost bounded memory. How much the stalled ones slow the others down is a speed figure:
bench/slow_consumers.py measures it.

The server's sockets get a fixed 8 KiB send buffer (see `serving`): the kernel would otherwise grow
it to 4 MiB per connection, and the test would have to push 4 MiB to all 1,000 clients before a
stalled one's send blocks (here: about 80 KB, with the transport's own 64 KiB buffer). The bridge
does the same thing either way; only the byte count changes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from bridge import metadata
from bridge.config import Settings
from bridge.runtime.engine import TriggerOptions
from bridge.server.websocket.connection import Connection
from bridge.server.websocket.outbox import Outbox
from bridge.server.websocket.protocol import CLOSE_SLOW_CONSUMER
from tests.conftest import serving, suite_settings
from tests.support.helpers import Tally, open_gate, token, unique
from tests.support.lean_ws import Frame, LeanWebSocket, close_all
from tests.support.tasks import gates, registry

CLIENTS = 1000
STALLED = 50  # 5%
UPDATES = 30
PAUSE = 0.01
PAD_BYTES = 8000  # in the run's payload, so every update frame carries it: ~8.6 kB a frame
GRACE = 1.0  # slow_consumer_grace_seconds (5 s by default), shortened to keep the test short
SEND_BUFFER = 4096  # the server sockets' SO_SNDBUF (the kernel doubles it)
RECEIVE_BUFFER = 4096  # the stalled clients' SO_RCVBUF
CONNECTING_AT_ONCE = 100
TIMEOUT = 60.0


@registry.add_task("slow-consumers-updates")
async def updates(payload: dict[str, Any]) -> int:
    """Once the gate opens, sets metadata `step` 1..`updates`, `pause` seconds apart."""
    await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    for step in range(1, payload["updates"] + 1):
        await metadata.set("step", step)
        await asyncio.sleep(payload["pause"])  # simulated work between progress reports
    return int(payload["updates"])


@dataclass
class Follower:
    """One client's view of the run: the newest version, checked to grow with every frame."""

    stalled: bool
    finished: Tally  # the reading clients that have the run's final state
    version: int = 0
    run: Frame | None = None
    last_update: int = 0  # the version of the last `update` frame
    socket: LeanWebSocket | None = None
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)

    def on_frame(self, frame: Frame) -> None:
        if frame["type"] == "snapshot":
            (run,) = frame["runs"]
            self.subscribed.set()
            if self.stalled:
                assert self.socket is not None
                self.socket.pause_reading()  # from now on it reads nothing: the server's sends back up
        elif frame["type"] == "update":
            run = frame["run"]
            assert run["version"] > self.last_update, (run["version"], self.last_update)  # in order
            self.last_update = run["version"]
        else:
            assert frame["type"] == "welcome", frame
            return
        if run["version"] <= self.version:
            return  # a snapshot older than an update that came before it (docs/protocol.md): keep the newest
        if run["status"] == "COMPLETED":
            self.finished.add()
        self.version, self.run = run["version"], run


@dataclass
class Recorder:
    """The server side, seen from inside: the largest send queue of any connection, and each 4008 close."""

    peak_frames: int = 0
    peak_bytes: int = 0
    closes: list[tuple[float, int, str]] = field(default_factory=list)
    all_closed: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder()
    coalesce, close = Outbox.coalesce, Connection._close

    def coalescing(outbox: Outbox, key: Hashable, frame: str) -> bool:
        within = coalesce(outbox, key, frame)
        recorder.peak_frames = max(recorder.peak_frames, len(outbox))
        recorder.peak_bytes = max(recorder.peak_bytes, outbox.bytes)
        return within

    async def closing(connection: Connection, code: int, reason: str) -> None:
        recorder.closes.append((time.monotonic(), code, reason))
        if len(recorder.closes) >= STALLED:
            recorder.all_closed.set()
        await close(connection, code, reason)

    monkeypatch.setattr(Outbox, "coalesce", coalescing)
    monkeypatch.setattr(Connection, "_close", closing)
    return recorder


async def test_stalled_clients_are_closed_while_every_other_one_gets_each_update_in_order(
    recorder: Recorder,
) -> None:
    base = suite_settings()
    settings: Settings = replace(base, limits=replace(base.limits, slow_consumer_grace_seconds=GRACE))
    async with serving(settings, send_buffer=SEND_BUFFER) as server:
        port = int(server.url.rsplit(":", 1)[1])
        gate = unique("gate")
        payload = {"gate": gate, "updates": UPDATES, "pause": PAUSE, "pad": "x" * PAD_BYTES}
        run, _ = await server.app_bridge.engine.trigger("slow-consumers-updates", payload, TriggerOptions())
        subscribe = {
            "type": "subscribe",
            "id": "run",
            "feed": "run",
            "runId": run.id,
            "token": token(f"read:runs:{run.id}"),
        }
        finished = Tally(CLIENTS - STALLED)
        followers = [Follower(n % (CLIENTS // STALLED) == 0, finished) for n in range(CLIENTS)]
        assert sum(f.stalled for f in followers) == STALLED
        connecting = asyncio.Semaphore(CONNECTING_AT_ONCE)

        async def join(follower: Follower) -> None:
            async with connecting:
                buffer = RECEIVE_BUFFER if follower.stalled else None
                follower.socket = await LeanWebSocket.connect(port, follower.on_frame, receive_buffer=buffer)
                follower.socket.send(subscribe)
                await follower.subscribed.wait()

        readers = [f for f in followers if not f.stalled]
        try:
            async with asyncio.timeout(TIMEOUT):
                await asyncio.gather(*(join(f) for f in followers))
            started = time.monotonic()
            open_gate(gate)
            async with asyncio.timeout(TIMEOUT):
                await finished.all.wait()
            caught_up = time.monotonic()
            final = await server.app_bridge.engine.retrieve(run.id)
            async with asyncio.timeout(GRACE * 2 + 10):
                await recorder.all_closed.wait()
            for follower in readers:
                assert follower.run is not None and follower.run["version"] == final.version
                assert follower.run["metadata"] == {"step": UPDATES} and follower.run["output"] == UPDATES
                assert follower.socket is not None and not follower.socket.closed.done()  # still served
            # Exactly the stalled clients, each once a send had waited the grace (the reading ones are open).
            assert len(recorder.closes) == STALLED
            assert {(code, reason) for _, code, reason in recorder.closes} == {
                (CLOSE_SLOW_CONSUMER, f"slow consumer: one frame not taken in {GRACE:g} s")
            }
            last_close = max(at for at, _, _ in recorder.closes)
            # Bounded send queues: a connection's queue never held more than the welcome, a snapshot and one
            # update (coalesced per run), whatever the number of updates a stalled client missed.
            frame_bytes = len(payload["pad"]) * 2
            assert recorder.peak_frames <= 3 and recorder.peak_bytes <= 3 * frame_bytes, recorder
            # A stalled client that reads again finds its connection gone: closed with 4008, or cut without a
            # close frame when none could be written behind what it left unread (docs/protocol.md).
            for follower in followers:
                if follower.stalled:
                    assert follower.socket is not None
                    follower.socket.resume_reading()
            async with asyncio.timeout(TIMEOUT):
                for follower in followers:
                    if follower.stalled:
                        assert follower.socket is not None
                        assert await follower.socket.closed in (CLOSE_SLOW_CONSUMER, None)
            print(
                f"\n{CLIENTS} clients, {STALLED} stalled, {UPDATES} updates: readers caught up in "
                f"{caught_up - started:.2f} s; last stalled client closed {last_close - caught_up:+.2f} s after that"
            )
            assert last_close - caught_up < GRACE + 5
        finally:
            await close_all([f.socket for f in followers if f.socket is not None])
