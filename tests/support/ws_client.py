"""A small async WebSocket client for tests of the bridge's protocol.

It sends frames and awaits frames matching a predicate, always with a bounded timeout; frames
received while waiting for another one are kept, in order, for later `expect` calls. `sync()`
orders the stream: it sends a ping and returns every frame the server sent before the pong.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

DEFAULT_TIMEOUT = 10.0

Frame = dict[str, Any]
Predicate = Callable[[Frame], bool]


def of_type(kind: str, id: str | None = None) -> Predicate:  # noqa: A002 - the protocol's field name
    """Frames of type `kind` (and of subscription `id`, when given)."""
    return lambda frame: frame.get("type") == kind and (id is None or frame.get("id") == id)


def error(code: str, id: str | None = None) -> Predicate:  # noqa: A002
    return lambda frame: frame.get("type") == "error" and frame.get("code") == code and frame.get("id") == id


def runs_in(frame: Frame) -> list[Frame]:
    """The runs a snapshot or update frame carries."""
    if frame.get("type") == "snapshot":
        return list(frame["runs"])
    if frame.get("type") == "update":
        return [frame["run"]]
    return []


def on_topic(topic: str, run: Callable[[Frame], bool] = lambda _: True) -> Predicate:
    """A snapshot or update on `topic` carrying a run that satisfies `run`."""
    return lambda frame: (
        frame.get("type") in ("snapshot", "update") and frame.get("topic") == topic and any(map(run, runs_in(frame)))
    )


class WsClient:
    def __init__(self, connection: ClientConnection) -> None:
        self.connection = connection
        self.pending: deque[Frame] = deque()  # received, not yet taken by expect/frames_until
        self.welcome: Frame | None = None
        self._pings = itertools.count(1)

    async def send(self, frame: Frame | str | bytes) -> None:
        """Sends a dict as JSON text; a str or bytes is sent as it is (for malformed frames)."""
        await self.connection.send(orjson.dumps(frame).decode() if isinstance(frame, dict) else frame)

    async def subscribe_run(self, id: str, run_id: str, token: str) -> None:  # noqa: A002
        await self.send({"type": "subscribe", "id": id, "feed": "run", "runId": run_id, "token": token})

    async def subscribe_tags(self, id: str, tags: list[str], token: str, **extra: Any) -> None:  # noqa: A002
        await self.send({"type": "subscribe", "id": id, "feed": "tags", "tags": tags, "token": token, **extra})

    async def subscribe_batch(self, id: str, batch_id: str, token: str) -> None:  # noqa: A002
        await self.send({"type": "subscribe", "id": id, "feed": "batch", "batchId": batch_id, "token": token})

    async def unsubscribe(self, id: str) -> None:  # noqa: A002
        await self.send({"type": "unsubscribe", "id": id})

    async def _receive(self) -> Frame:
        message = await self.connection.recv()
        frame = orjson.loads(message)
        assert isinstance(frame, dict), f"the server sent a non-object frame: {message!r}"
        return frame

    async def frames_until(self, predicate: Predicate, timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Every frame up to and including the first that matches, consumed; fails after `timeout` s."""
        taken: list[Frame] = []
        while self.pending:
            frame = self.pending.popleft()
            taken.append(frame)
            if predicate(frame):
                return taken
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self._receive()
                    taken.append(frame)
                    if predicate(frame):
                        return taken
        except TimeoutError:
            self.pending.extendleft(reversed(taken))
            raise AssertionError(f"no matching frame within {timeout:g} s; received: {_summary(taken)}") from None

    async def expect(self, predicate: Predicate, timeout: float = DEFAULT_TIMEOUT) -> Frame:
        """The first frame that matches; frames before it stay pending, in order."""
        for index, frame in enumerate(self.pending):
            if predicate(frame):
                del self.pending[index]
                return frame
        skipped: list[Frame] = []
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frame = await self._receive()
                    if predicate(frame):
                        self.pending.extend(skipped)
                        return frame
                    skipped.append(frame)
        except TimeoutError:
            self.pending.extend(skipped)
            raise AssertionError(
                f"no matching frame within {timeout:g} s; pending: {_summary(list(self.pending))}"
            ) from None

    async def sync(self, timeout: float = DEFAULT_TIMEOUT) -> list[Frame]:
        """Pings and returns every frame sent before the pong (pending ones included), all consumed."""
        ping_id = f"sync-{next(self._pings)}"
        await self.send({"type": "ping", "id": ping_id})
        return (await self.frames_until(of_type("pong", ping_id), timeout))[:-1]

    async def drain_until_closed(self, timeout: float = DEFAULT_TIMEOUT) -> tuple[list[Frame], Close | None]:
        """Every frame (pending first) until the connection ends, and the server's close frame (None if none came)."""
        frames = list(self.pending)
        self.pending.clear()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    frames.append(await self._receive())
        except ConnectionClosed as closed:
            return frames, closed.rcvd
        except TimeoutError:
            raise AssertionError(
                f"the server did not close the connection within {timeout:g} s; received: {_summary(frames)}"
            ) from None


def _summary(frames: list[Frame]) -> str:
    parts = []
    for frame in frames[-20:]:
        kind = frame.get("type")
        if kind == "update":
            run = frame["run"]
            parts.append(f"update({frame['topic']}, {run['id']} v{run['version']} {run['status']})")
        elif kind == "snapshot":
            parts.append(f"snapshot({frame['id']}, {len(frame['runs'])} runs)")
        else:
            parts.append(orjson.dumps(frame).decode()[:200])
    return "[" + ", ".join(parts) + "]"


@contextlib.asynccontextmanager
async def connect(url: str, *, welcome: bool = True, **options: Any) -> AsyncIterator[WsClient]:
    """A connected client; by default it has already taken the welcome frame (as `client.welcome`).

    `options` go to `websockets.connect` (e.g. `max_queue`, `compression`); keepalive pings are
    off unless asked for, so they never interleave with what a test watches.
    """
    options.setdefault("ping_interval", None)
    options.setdefault("open_timeout", DEFAULT_TIMEOUT)
    options.setdefault("close_timeout", 2)
    async with websockets.connect(url, **options) as connection:
        client = WsClient(connection)
        if welcome:
            client.welcome = await client.expect(of_type("welcome"))
        yield client
