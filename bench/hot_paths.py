"""CPU time of the delivery hot paths, in one process, for an A/B between two checkouts:

    .venv/bin/python bench/hot_paths.py [CHECKOUT]    # default: this one; run it alternately for each side

(1) `Connection._send_forever` per frame: frames queued in batches of 100, sent to a socket that takes
    everything at once (on a checkout with the raw frame path: the ASGI fallback's sender); (2)
    `StreamWriter` per awaited append on the memory broker: one chunk per stored batch, the worst case for
    per-batch costs; (3) run-feed fan-out, server CPU per delivery: the bridge under real uvicorn on a
    loopback port (with the raw frame path when the checkout has one), FOLLOWERS WebSocket subscribers of one
    run in a sink process that reads and discards everything, and a run update dispatched by the hub one at a
    time, each waited for until every subscriber's frame is written; (4) the same for stream chunks:
    STREAMS runs x 2 readers, one chunk appended to each stream (memory broker) per step. (3) and (4) count
    this process's CPU only: the sink runs in another; (5) `authenticate` per use of one public token (a
    page's subscriptions and polls); (6) the official long-poll run feed per answer: WATCHERS live polls of one
    run, called on the app (ASGI, no sockets), each answered by one metadata update; (7) the official SSE route
    per delivered chunk: WATCHERS responses reading one stream. `time.process_time`, best of the rounds, so
    other processes on the machine disturb it less than wall-clock figures. See bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
from starlette.websockets import WebSocketState  # noqa: E402

import bridge  # noqa: E402
from bridge.backends.channels import run_channel  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.models import Run, RunStatus  # noqa: E402
from bridge.runtime.access import authenticate, create_public_token  # noqa: E402
from bridge.runtime.core import Bridge  # noqa: E402
from bridge.runtime.output_streams import RunStreams  # noqa: E402
from bridge.server.app import create_app  # noqa: E402
from bridge.server.websocket.connection import Connection  # noqa: E402

try:  # the raw frame path, in checkouts that have it
    from bridge.server.websocket.transport import UVICORN_OPTIONS, text_frame
except ImportError:
    UVICORN_OPTIONS, text_frame = {}, None

ROUNDS = 7
KEY = "hot-paths-benchmark-key-0123456789"
CHUNK = '{"type":"chunk","id":"s1","index":12345,"data":{"i":12345,"text":" token"}}'
FRAME = CHUNK if text_frame is None else text_frame(CHUNK.encode())  # what the checkout's outbox holds
FOLLOWERS = 1000
WATCHERS = 500  # long-polls of one run / SSE responses of one stream
UPDATES = 60  # per round
STREAMS = 250  # runs, each read by 2 subscribers
CHUNKS = 100  # per stream per round
FANOUT_ROUNDS = 5
STREAM_ROUNDS = 3
WAIT_SECONDS = 30.0  # for one step's frames to be written; then the benchmark fails

# The subscribers: raw sockets in another process, each sending the WebSocket handshake then, once answered,
# one `subscribe` frame (masked with a zero key, so written as is), then reading and discarding everything; the
# frames, one JSON line each; exits when its parent closes stdin.
SINK = r"""
import asyncio, base64, json, os, sys

def masked(payload):
    n = len(payload)
    head = bytes((0x81, 0x80 | n)) if n < 126 else bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    return head + bytes(4) + payload

class Sink(asyncio.Protocol):
    def __init__(self, frame):
        self.frame = frame
    def connection_made(self, transport):
        key = base64.b64encode(os.urandom(16))
        head = b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        transport.write(head + b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n")
        self.transport = transport
    def data_received(self, data):
        if self.frame is not None:  # the handshake's answer: subscribe
            self.transport.write(masked(self.frame))
            self.frame = None

async def main():
    loop = asyncio.get_running_loop()
    frames = json.loads(sys.stdin.readline())
    for frame in frames:
        await loop.create_connection(lambda: Sink(json.dumps(frame).encode()), "127.0.0.1", int(sys.argv[1]))
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes stdin

asyncio.run(main())
"""


class TakesEverything:
    """The part of a Starlette WebSocket the sender uses."""

    application_state = WebSocketState.CONNECTED
    scope: dict[str, object] = {}  # no raw frame path: the sender sends through ASGI

    async def send_text(self, text: str) -> None:
        return None


async def sender_us_per_frame(running: Bridge) -> float:
    connection = Connection(TakesEverything(), running, None)  # type: ignore[arg-type]  # no router: the sender alone
    sender = asyncio.create_task(connection._send_forever())
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(300):
            for _ in range(100):
                connection._queue(FRAME, tag="s1")
            await asyncio.sleep(0)  # the sender's one wake-up: nothing it sends to waits
            assert not connection.outbox
        best = min(best, (time.process_time() - started) / 30_000)
    sender.cancel()
    return best * 1e6


async def writer_us_per_append(running: Bridge) -> float:
    run = Run(id="run_hot_paths", task_identifier="hot-paths")
    await running.broker.insert_run(run, None, 60)
    writer = await RunStreams(running.engine, run.id).writer("ai")
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for i in range(3000):
            await writer.append({"i": i})
        best = min(best, (time.process_time() - started) / 3000)
    return best * 1e6


def frames_sent(running: Bridge) -> float:
    return running.metrics.websocket_frames._value.get()  # type: ignore[attr-defined]


async def until_sent(running: Bridge, count: float) -> None:
    """Returns once `count` frames were written; polled between loop iterations."""
    deadline = time.monotonic() + WAIT_SECONDS
    while frames_sent(running) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{frames_sent(running)} frames sent, {count} expected")
        await asyncio.sleep(0)


class Served:
    """The bridge under uvicorn on a free loopback port (with the checkout's raw frame path, if any) and a sink."""

    async def __aenter__(self) -> Served:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(2048)
        self.port = sock.getsockname()[1]
        app = create_app(Settings(secret_key=KEY))
        self.running: Bridge = app.state.bridge
        config = uvicorn.Config(app, log_level="warning", lifespan="on", **UVICORN_OPTIONS)  # type: ignore[arg-type]
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve(sockets=[sock]))
        self.sink: asyncio.subprocess.Process | None = None
        deadline = time.monotonic() + WAIT_SECONDS
        while not self.server.started and time.monotonic() < deadline:  # noqa: ASYNC110  # uvicorn has no event
            await asyncio.sleep(0.01)
        return self

    async def subscribe(self, subscribes: list[dict[str, object]], frames: int) -> None:
        """Starts the sink's subscribers; returns once `frames` frames were sent (welcomes, snapshots)."""
        self.sink = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SINK, str(self.port), stdin=asyncio.subprocess.PIPE
        )
        assert self.sink.stdin is not None
        self.sink.stdin.write(json.dumps(subscribes).encode() + b"\n")
        await self.sink.stdin.drain()
        await until_sent(self.running, frames_sent(self.running) + frames)

    async def __aexit__(self, *exc: object) -> None:
        if self.sink is not None:
            assert self.sink.stdin is not None
            self.sink.stdin.close()
            await asyncio.wait_for(self.sink.wait(), 10)
        self.server.should_exit = True
        await asyncio.wait_for(self.task, 30)


async def fanout_us_per_delivery() -> float:
    """Server CPU per run-feed delivery: FOLLOWERS subscribers of one run, one update dispatched at a time."""
    async with Served() as served:
        running = served.running
        run = Run(id="run_hot_paths", task_identifier="hot-paths", metadata={"progress": 0.5, "step": "x" * 40})
        await running.broker.insert_run(run, None, 60)
        subscribe = {"type": "subscribe", "id": "r", "feed": "run", "runId": run.id, "token": KEY}
        await served.subscribe([subscribe] * FOLLOWERS, 2 * FOLLOWERS)  # a welcome and a snapshot each
        channel = run_channel(run.id)
        best = float("inf")
        for _ in range(FANOUT_ROUNDS):
            started = time.process_time()
            for version in range(UPDATES):
                raw = Run(**{**run.__dict__, "version": version + 2}).to_storage()
                expected = frames_sent(running) + FOLLOWERS
                running.hub._dispatch(channel, raw)  # as the broker's notifier would
                await until_sent(running, expected)  # no coalescing: every follower got this one
            best = min(best, (time.process_time() - started) / (UPDATES * FOLLOWERS))
    return best * 1e6


async def stream_us_per_delivery() -> float:
    """Server CPU per stream chunk delivered: STREAMS runs x 2 readers, a chunk appended to each run per step."""
    async with Served() as served:
        running = served.running
        runs = [
            Run(id=f"run_hot_paths_{n}", task_identifier="hot-paths", status=RunStatus.EXECUTING)
            for n in range(STREAMS)
        ]
        for run in runs:
            await running.broker.insert_run(run, None, 60)
        subscribes: list[dict[str, object]] = [
            {"type": "subscribe", "id": "s", "feed": "stream", "runId": run.id, "key": "ai", "token": KEY}
            for run in runs
            for _ in range(2)
        ]
        await served.subscribe(subscribes, len(subscribes))  # a welcome each
        await asyncio.sleep(0.5)  # the readers' first (empty) storage read
        index = 0
        best = float("inf")
        for _ in range(STREAM_ROUNDS):
            started = time.process_time()
            for _ in range(CHUNKS):
                expected = frames_sent(running) + len(subscribes)
                chunk = b'{"i":%d,"text":" token"}' % index
                for run in runs:
                    await running.broker.append_chunks(run.id, "ai", [chunk], index)
                index += 1
                await until_sent(running, expected)
            best = min(best, (time.process_time() - started) / (CHUNKS * len(subscribes)))
    return best * 1e6


def authenticate_us_per_use() -> float:
    token = create_public_token(KEY, ["read:runs:run_hot_paths"], "1h")
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(2000):
            authenticate(KEY, token)
        best = min(best, (time.process_time() - started) / 2000)
    return best * 1e6


class Bodies:
    """Body messages with bytes, counted over many calls; `reached(n)` waits for the n-th."""

    def __init__(self) -> None:
        self.count = 0
        self._target = 0
        self._event = asyncio.Event()

    def add(self) -> None:
        self.count += 1
        if self.count >= self._target:
            self._event.set()

    async def reached(self, target: int) -> None:
        self._target = target
        self._event.clear()
        if self.count < target:
            async with asyncio.timeout(30):
                await self._event.wait()


class Call:
    """One HTTP request to the app, ASGI only: its answer's messages, and a client that never leaves."""

    def __init__(self, app: Any, path: str, query: str, token: str, bodies: Bodies | None = None) -> None:
        self.messages: list[dict[str, Any]] = []
        self._bodies = bodies
        self._asked = False
        self._stays: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        scope = {
            "type": "http",
            "method": "GET",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"authorization", f"Bearer {token}".encode()), (b"origin", b"https://app.example")],
            "http_version": "1.1",
            "scheme": "http",
            "server": ("127.0.0.1", 80),
            "client": ("127.0.0.1", 1234),
            "root_path": "",
        }
        self.task = asyncio.create_task(app(scope, self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if not self._asked:
            self._asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._stays
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if message.get("body") and self._bodies:
            self._bodies.add()

    def header(self, name: bytes) -> str:
        return dict(self.messages[0]["headers"])[name].decode()


@contextlib.asynccontextmanager
async def served_run() -> AsyncIterator[tuple[Any, Bridge, str, str]]:
    """The app on the memory backend, one run, and a token that reads it."""
    app = create_app(Settings(secret_key=KEY))
    async with app.router.lifespan_context(app):
        running: Bridge = app.state.bridge
        run = Run(id="run_hot_paths", task_identifier="hot-paths")
        await running.broker.insert_run(run, None, 60)
        yield app, running, run.id, create_public_token(KEY, [f"read:runs:{run.id}"], "1h")


async def long_poll_us_per_answer() -> float:
    async with served_run() as (app, running, run_id, token):
        path = f"/realtime/v1/runs/{run_id}"
        opened = [Call(app, path, "offset=-1", token) for _ in range(WATCHERS)]
        await asyncio.gather(*(call.task for call in opened))
        sessions = [(call.header(b"electric-handle"), call.header(b"electric-offset")) for call in opened]
        best = float("inf")
        for version in range(3):
            started = time.process_time()
            polls = [Call(app, path, f"handle={h}&offset={o}&live=true", token) for h, o in sessions]
            await asyncio.sleep(0)  # every poll is waiting for a change

            def mutate(run: Run, version: int = version) -> None:
                run.metadata = {"progress": version, "text": "x" * 60}

            await running.engine.update(run_id, mutate)
            await asyncio.gather(*(call.task for call in polls))
            best = min(best, (time.process_time() - started) / WATCHERS)
            sessions = [(h, call.header(b"electric-offset")) for (h, _), call in zip(sessions, polls, strict=True)]
        return best * 1e6


async def sse_us_per_delivery() -> float:
    async with served_run() as (app, running, run_id, token):
        writer = await RunStreams(running.engine, run_id).writer("ai")
        await writer.append({"i": -1})
        bodies = Bodies()
        readers = [Call(app, f"/realtime/v1/streams/{run_id}/ai", "", token, bodies) for _ in range(WATCHERS)]
        await bodies.reached(WATCHERS)  # each has the first chunk
        best = float("inf")
        for _ in range(3):
            started = time.process_time()
            for _ in range(20):
                target = bodies.count + WATCHERS  # every reader gets the chunk, exactly once
                await writer.append({"text": " token"})
                await bodies.reached(target)
            best = min(best, (time.process_time() - started) / (20 * WATCHERS))
        for call in readers:
            call.task.cancel()
        await asyncio.gather(*(call.task for call in readers), return_exceptions=True)
        return best * 1e6


async def main() -> None:
    running = Bridge(Settings(secret_key=KEY))
    await running.start()
    try:
        print(f"{ROOT}: sender {await sender_us_per_frame(running):.2f} us per frame, ", end="")
        print(f"writer {await writer_us_per_append(running):.2f} us per awaited append, ", end="")
    finally:
        await running.stop()
    print(f"fan-out {await fanout_us_per_delivery():.2f} us per run-feed delivery, ", end="")
    print(f"streams {await stream_us_per_delivery():.2f} us per chunk delivery, ", end="")
    print(f"authenticate {authenticate_us_per_use():.2f} us per use, ", end="")
    print(f"long-poll {await long_poll_us_per_answer():.1f} us per answer, ", end="")
    print(f"SSE {await sse_us_per_delivery():.1f} us per delivery")


if __name__ == "__main__":
    if not Path(bridge.__file__).resolve().is_relative_to(ROOT):
        sys.exit(f"imported {bridge.__file__}, not the checkout {ROOT}")
    asyncio.run(main())
