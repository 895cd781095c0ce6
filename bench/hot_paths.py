"""CPU time of delivery hot paths, in one process, for an A/B between two checkouts:

    .venv/bin/python bench/hot_paths.py [CHECKOUT]    # default: this one; run it alternately for each side

(1) `Connection._send_forever` per frame: frames queued in batches of 100, sent to a socket that takes
    everything at once; (2) `StreamWriter` per awaited append on the memory broker: one chunk per stored
    batch, the worst case for per-batch costs; (3) `authenticate` per use of one public token (a page's
    subscriptions and polls); (4) the official long-poll run feed per answer: 500 live polls of one run, called
    on the app (ASGI, no sockets), each answered by one metadata update; (5) the official SSE route per
    delivered chunk: 500 responses reading one stream. `time.process_time`, best of 7 rounds (3 for the
    last two), so other processes on the machine disturb it less than wall-clock figures. See bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
sys.path.insert(0, str(ROOT))

from starlette.websockets import WebSocketState  # noqa: E402

import bridge  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.models import Run  # noqa: E402
from bridge.runtime.access import authenticate, create_public_token  # noqa: E402
from bridge.runtime.core import Bridge  # noqa: E402
from bridge.runtime.output_streams import RunStreams  # noqa: E402
from bridge.server.app import create_app  # noqa: E402
from bridge.server.topics import TopicRouter  # noqa: E402
from bridge.server.websocket.connection import Connection  # noqa: E402

ROUNDS = 7
SECRET = "hot-paths-benchmark-key-0123456789"
WATCHERS = 500  # long-polls of one run / SSE responses of one stream
FRAME = '{"type":"chunk","id":"s1","index":12345,"data":{"i":12345,"text":" token"}}'


class TakesEverything:
    """The part of a Starlette WebSocket the sender uses."""

    application_state = WebSocketState.CONNECTED

    async def send_text(self, text: str) -> None:
        return None


async def sender_us_per_frame(running: Bridge) -> float:
    connection = Connection(TakesEverything(), running, TopicRouter(running.hub))  # type: ignore[arg-type]
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


def authenticate_us_per_use() -> float:
    token = create_public_token(SECRET, ["read:runs:run_hot_paths"], "1h")
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(2000):
            authenticate(SECRET, token)
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
    app = create_app(Settings(secret_key=SECRET))
    async with app.router.lifespan_context(app):
        running: Bridge = app.state.bridge
        run = Run(id="run_hot_paths", task_identifier="hot-paths")
        await running.broker.insert_run(run, None, 60)
        yield app, running, run.id, create_public_token(SECRET, [f"read:runs:{run.id}"], "1h")


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
    running = Bridge(Settings(secret_key=SECRET))
    await running.start()
    try:
        print(f"{ROOT}: sender {await sender_us_per_frame(running):.2f} us per frame, ", end="")
        print(f"writer {await writer_us_per_append(running):.2f} us per awaited append, ", end="")
    finally:
        await running.stop()
    print(f"authenticate {authenticate_us_per_use():.2f} us per use, ", end="")
    print(f"long-poll {await long_poll_us_per_answer():.1f} us per answer, ", end="")
    print(f"SSE {await sse_us_per_delivery():.1f} us per delivery")


if __name__ == "__main__":
    if not Path(bridge.__file__).resolve().is_relative_to(ROOT):
        sys.exit(f"imported {bridge.__file__}, not the checkout {ROOT}")
    asyncio.run(main())
