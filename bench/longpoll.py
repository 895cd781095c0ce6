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
from typing import Any

import httpx
import orjson

from bench.load import Sink
from bench.streams import LOAD_CORE, pin, run_async

CONNECT_TIMEOUT_S = 120.0
POLL_TIMEOUT_S = 30.0  # a live poll is held up to 20 s by the server


class Watcher:
    def __init__(self, http: httpx.AsyncClient, path: str, sink: Sink) -> None:
        self.http, self.path, self.sink = http, path, sink
        self.last = -1

    async def poll(self, params: dict[str, str]) -> httpx.Response:
        answer = await self.http.get(self.path, params={"log": "full", **params})
        answer.raise_for_status()
        now = time.monotonic_ns()
        for message in orjson.loads(answer.content):
            metadata = message.get("value", {}).get("metadata")
            if metadata:
                self.record(orjson.loads(metadata), now)
        return answer

    def record(self, metadata: dict[str, Any], now: int) -> None:
        version = metadata.get("v")
        if version is None or version == self.last:
            return
        sink = self.sink
        sink.sent.append(metadata["t"])
        sink.latency.append(now - metadata["t"])
        if self.last >= 0:
            if version > self.last + 1:
                sink.skipped += version - self.last - 1
            elif version < self.last:
                sink.backwards += 1
        self.last = version

    async def first(self) -> httpx.Response:
        answer = await self.poll({"offset": "-1"})
        self.sink.ready += 1
        return answer

    async def follow(self, answer: httpx.Response) -> None:
        while True:  # bounded by the parent's "stop", which cancels it
            headers = answer.headers
            live = {"live": "true", "handle": headers["electric-handle"], "offset": headers["electric-offset"],
                    "cursor": headers.get("electric-cursor", "")}  # fmt: skip
            answer = await self.poll(live)


async def watchers_main(port: int, run_id: str, token: str, count: int, conn: Any) -> None:
    sink = Sink()
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {token}"}
    loop = asyncio.get_running_loop()
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=POLL_TIMEOUT_S
    ) as http:
        watchers = [Watcher(http, f"/realtime/v1/runs/{run_id}", sink) for _ in range(count)]
        started = time.monotonic()
        firsts: list[httpx.Response] = []
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                firsts = list(await asyncio.gather(*(watcher.first() for watcher in watchers)))
        except Exception as exc:  # reported, not raised: the parent decides
            sink.errors.append(f"first poll: {exc!r}")
        conn.send(("ready", sink.ready, time.monotonic() - started, sink.errors[:5]))
        tasks = [asyncio.create_task(w.follow(a)) for w, a in zip(watchers, firsts, strict=False)]
        while await loop.run_in_executor(None, conn.recv) == "report":  # until "stop"
            failed = [repr(t.exception()) for t in tasks if t.done() and not t.cancelled() and t.exception()]
            counts = {"skipped": sink.skipped, "gaps": [], "backwards": sink.backwards, "behind": 0,
                      "errors": (sink.errors + failed)[:20]}  # fmt: skip
            conn.send((counts, sink.sent.tobytes(), sink.latency.tobytes()))
            sink.sent, sink.latency, sink.skipped, sink.backwards = array.array("q"), array.array("q"), 0, 0
        for task in tasks:
            task.cancel()
        with contextlib.suppress(BaseException):
            await asyncio.gather(*tasks, return_exceptions=True)
    conn.send("stopped")


def watchers_process(port: int, run_id: str, token: str, count: int, conn: Any) -> None:
    pin(0, LOAD_CORE)
    run_async(watchers_main(port, run_id, token, count, conn))
