"""The load of `python -m bench`, in processes of their own pinned to the load core: the subscribers
(`clients_process`, hand-rolled WebSocket clients on uvloop) and the publisher (`publish.py`, a script run by
the system's own interpreter). Every message carries `t` (CLOCK_MONOTONIC ns, taken just before it is
published) and `v` (its number on its target); a client records receive time - `t` and counts skipped `v`."""

from __future__ import annotations

import array
import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from bench.streams import LOAD_CORE, pin, run_async
from bench.wsclient import FramedClient

CONNECTING_AT_ONCE = 100
CONNECT_TIMEOUT_S = 120.0


@dataclass
class Connection:
    """One subscriber: the path it opens and the frames it sends once upgraded."""

    path: str
    first_frames: list[bytes] = field(default_factory=list)


@dataclass
class Sink:
    """What every client of one process received."""

    sent: array.array[int] = field(default_factory=lambda: array.array("q"))
    latency: array.array[int] = field(default_factory=lambda: array.array("q"))
    skipped: int = 0  # versions a client never saw between two it saw
    backwards: int = 0  # a version older than one already seen: out of order
    gaps: list[tuple[int, int]] = field(default_factory=list)  # the first few (last seen, next seen) skips
    ready: int = 0
    errors: list[str] = field(default_factory=list)

    def arrival(self, last: int, version: int, sent: int, now: int) -> int:
        """Records message `version` (stamped `sent`) reaching a client whose last was `last`; returns its new
        last. The same version again (the bridge: a status change of the run, its metadata unchanged) is not a
        delivery."""
        if version == last:
            return last
        self.sent.append(sent)
        self.latency.append(now - sent)
        if last >= 0:
            if version > last + 1:
                self.skipped += version - last - 1
                if len(self.gaps) < 5:
                    self.gaps.append((last, version))
            elif version < last:
                self.backwards += 1
        return version


class Subscriber(FramedClient):
    """`bridge`: frames of the run feed, `{"type": "update", "run": {"metadata": {"t", "v"}}}`, ready at the
    snapshot. Peers: the message itself, `{"t", "v", ...}`, ready once upgraded."""

    def __init__(self, sink: Sink, port: int, connection: Connection, bridge: bool, ready: asyncio.Event) -> None:
        super().__init__(port, connection.path, connection.first_frames)
        self.sink = sink
        self.bridge = bridge
        self.ready = ready
        self.last = -1

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.errors:
            self.sink.errors.extend(self.errors)
            self.errors.clear()
            self.ready.set()
        elif self.upgraded and not self.bridge and not self.ready.is_set():
            self.sink.ready += 1
            self.ready.set()

    def text(self, payload: bytes, now: int) -> None:
        message = orjson.loads(payload)
        if self.bridge:
            kind = message["type"]
            if kind != "update":
                if kind == "snapshot":
                    self.sink.ready += 1
                    self.ready.set()
                elif kind == "error":
                    self.sink.errors.append(f"error frame: {message}")
                    self.ready.set()
                return
            message = message["run"]["metadata"]
            if "t" not in message:
                return
        self.last = self.sink.arrival(self.last, message["v"], message["t"], now)


async def clients_main(port: int, connections: list[Connection], bridge: bool, conn: Any) -> None:
    sink = Sink()
    protocols: list[Subscriber] = []
    gate = asyncio.Semaphore(CONNECTING_AT_ONCE)
    loop = asyncio.get_running_loop()

    async def one(connection: Connection) -> None:
        ready = asyncio.Event()
        async with gate:
            _transport, protocol = await loop.create_connection(
                lambda: Subscriber(sink, port, connection, bridge, ready), "127.0.0.1", port
            )
            protocols.append(protocol)
            await ready.wait()

    started = time.monotonic()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.gather(*(one(connection) for connection in connections))
    except Exception as exc:  # reported, not raised: the parent decides
        sink.errors.append(f"connecting: {exc!r}")
    conn.send(("ready", sink.ready, time.monotonic() - started, sink.errors[:5]))
    # "report" (what arrived since the last one) until "stop": the parent always sends it, or kills this process.
    while (command := await loop.run_in_executor(None, conn.recv)) == "report":
        newest = max((protocol.last for protocol in protocols), default=-1)
        behind = sum(protocol.last < newest for protocol in protocols)  # clients that never got the latest version
        counts = {"skipped": sink.skipped, "gaps": sink.gaps, "backwards": sink.backwards, "behind": behind,
                  "errors": sink.errors[:20]}  # fmt: skip
        conn.send((counts, sink.sent.tobytes(), sink.latency.tobytes()))
        sink.sent, sink.latency, sink.skipped, sink.backwards = array.array("q"), array.array("q"), 0, 0
        sink.gaps = []
    assert command == "stop"
    for protocol in protocols:
        with contextlib.suppress(Exception):
            protocol.transport.close()
    conn.send("stopped")


def clients_process(port: int, connections: list[Connection], bridge: bool, conn: Any) -> None:
    pin(0, LOAD_CORE)
    run_async(clients_main(port, connections, bridge, conn))


def arrays(sent_raw: bytes, latency_raw: bytes) -> tuple[array.array[int], array.array[int]]:
    sent, latency = array.array("q"), array.array("q")
    sent.frombytes(sent_raw)
    latency.frombytes(latency_raw)
    return sent, latency
