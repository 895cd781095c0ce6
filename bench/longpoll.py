"""Scenario 5's watchers: the official run feed as @trigger.dev/react-hooks polls it, an Electric shape
long-poll (`GET /realtime/v1/runs/<id>?offset=-1`, then `live=true` with the answer's handle, offset and
cursor), `count` watchers of one run in one process pinned to the load core. Each change's metadata carries
the publisher's `t` and `v` (bench/publish.py); a watcher records receive time - `t` and the versions it
never saw (a poll answers with the run's latest state: coalescing by design). Speaks bench/load.py's
protocol with its parent ("ready", then "report" until "stop")."""

from __future__ import annotations

import array
import asyncio
import contextlib
import time
import urllib.parse
from typing import Any

import orjson

from bench.load import CONNECTING_AT_ONCE, Sink
from bench.streams import LOAD_CORE, pin, run_async

CONNECT_TIMEOUT_S = 120.0


class Watcher(asyncio.Protocol):
    """One long-polling page on one keep-alive connection, HTTP/1.1 by hand (the server answers with a
    Content-Length): as little client CPU as possible, like bench/wsclient.py for WebSocket."""

    def __init__(self, port: int, path: str, token: str, sink: Sink) -> None:
        self.port, self.path, self.token, self.sink = port, path, token, sink
        self.last = -1
        self.buffer = b""
        self.transport: Any = None
        self.answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the first answer
        self.params: dict[str, str] = {"log": "full", "offset": "-1"}

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.request()

    def request(self) -> None:
        query = urllib.parse.urlencode(self.params)
        self.transport.write(
            f"GET {self.path}?{query} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in head[1:] if ": " in line)
        headers = {name.lower(): value for name, value in headers.items()}
        length = int(headers.get("content-length", "0"))
        if len(self.buffer) < end + 4 + length:
            return
        body, self.buffer = self.buffer[end + 4 : end + 4 + length], self.buffer[end + 4 + length :]
        if " 200 " not in head[0]:
            self.sink.errors.append(f"{head[0]}: {body[:200]!r}")
            self.transport.close()
            return
        for message in orjson.loads(body):
            metadata = message.get("value", {}).get("metadata")
            if metadata and "v" in (values := orjson.loads(metadata)):
                self.last = self.sink.arrival(self.last, values["v"], values["t"], now)
        if not self.answered.done():
            self.sink.ready += 1
            self.answered.set_result(None)
        self.params = {"log": "full", "live": "true", "handle": headers["electric-handle"],
                       "offset": headers["electric-offset"], "cursor": headers.get("electric-cursor", "")}  # fmt: skip
        self.request()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answered.done():
            self.answered.set_exception(ConnectionError("closed before the first answer"))


async def watchers_main(port: int, run_id: str, token: str, count: int, conn: Any) -> None:
    sink = Sink()
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    watchers: list[Watcher] = []

    async def one() -> None:
        async with gate:
            _, watcher = await loop.create_connection(
                lambda: Watcher(port, f"/realtime/v1/runs/{run_id}", token, sink), "127.0.0.1", port
            )
            watchers.append(watcher)
            await watcher.answered

    started = time.monotonic()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.gather(*(one() for _ in range(count)))
    except Exception as exc:  # reported, not raised: the parent decides
        sink.errors.append(f"first poll: {exc!r}")
    conn.send(("ready", sink.ready, time.monotonic() - started, sink.errors[:5]))
    while await loop.run_in_executor(None, conn.recv) == "report":  # until "stop"
        counts = {"skipped": sink.skipped, "gaps": [], "backwards": sink.backwards, "behind": 0,
                  "errors": sink.errors[:20]}  # fmt: skip
        conn.send((counts, sink.sent.tobytes(), sink.latency.tobytes()))
        sink.sent, sink.latency, sink.skipped, sink.backwards = array.array("q"), array.array("q"), 0, 0
    for watcher in watchers:
        with contextlib.suppress(Exception):
            watcher.transport.close()
    conn.send("stopped")


def watchers_process(port: int, run_id: str, token: str, count: int, conn: Any) -> None:
    pin(0, LOAD_CORE)
    run_async(watchers_main(port, run_id, token, count, conn))
