"""Output streams end to end, on both backends: the SDK, WebSocket stream subscriptions, the official
SSE route and the official client. Every reader must get each chunk exactly once, in order."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest

from bridge import runs, streams, tasks
from bridge.backends.base import Broker, StreamPage
from bridge.config import Settings
from bridge.errors import BackendUnavailableError, PayloadTooLargeError, StreamFailedError, ValidationError
from bridge.models import RunStatus
from bridge.runtime import output_streams
from bridge.runtime.output_streams import MAX_STREAM_INDEX, READ_PAGE_BYTES
from bridge.testing.redis_server import start_redis_server
from bridge.worker.context import require_run_scope
from tests.conftest import SECRET_KEY, RunningServer, start_server, stop_server, suite_settings
from tests.support.helpers import event_index, open_gate, server_with, sse_events, unique, until_final
from tests.support.official_client import run_script
from tests.support.tasks import gates, registry
from tests.support.ws_client import Frame, WsClient, connect, error, of_type

pytestmark = pytest.mark.cluster

TIMEOUT = 30.0


# Tasks for the SDK tests


@registry.add_task("streams-several")
async def several_streams(payload: dict[str, Any]) -> dict[str, Any]:
    """Writes to several keys; with a `gate`, waits after the first chunk of "a" so a test can look at the run."""
    ai = streams.define("a")
    await ai.append({"n": 0})
    if "gate" in payload:
        await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    concurrent = await asyncio.gather(*(ai.append({"n": i}) for i in range(1, 201)))
    await streams.append("b", "only")
    refused: dict[str, str] = {}
    try:
        await ai.append("x" * payload["too_big"])
    except PayloadTooLargeError as exc:
        refused["big"] = exc.code
    for bad in ("", "k" * 65, "bad\nkey"):
        try:
            await streams.append(bad, 1)
        except ValidationError as exc:
            refused[repr(bad)] = exc.code

    async def words() -> AsyncIterator[str]:
        for word in ("one", "two", "three"):
            yield word

    local = [word async for word in streams.pipe("words", words())]
    piped = streams.define("numbers").pipe(_count(300))
    await piped.wait_until_complete()  # nobody iterated it: it consumed the source itself
    return {"concurrent": sorted(concurrent), "refused": refused, "local": local}


async def _count(n: int) -> AsyncIterator[int]:
    for i in range(n):
        yield i


async def sdk_read(run_id: str, key: str, start_index: int = 0, timeout: float | None = 60) -> list[Any]:
    async with asyncio.timeout(TIMEOUT):
        return [c async for c in streams.read(run_id, key, start_index=start_index, timeout_in_seconds=timeout)]


async def test_sdk_append_pipe_and_read_with_several_named_streams(server: RunningServer) -> None:
    gate = unique("gate")
    too_big = server.settings.limits.max_chunk_bytes
    handle = await tasks.trigger("streams-several", {"gate": gate, "too_big": too_big})
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(runs.subscribe_to_run(handle.id)) as states:
        async for run in states:  # "a" is listed as soon as it has its first chunk; the others not yet
            if run.realtime_streams:
                assert run.realtime_streams == ["a"]
                break
    first = [c async for c in _take(streams.read(handle.id, "a"), 1)]
    assert first == [{"n": 0}]
    open_gate(gate)
    final = await until_final(handle.id)
    assert final.status.value == "COMPLETED", final.error
    assert final.realtime_streams == ["a", "b", "words", "numbers"]
    output = final.output
    assert output["concurrent"] == list(range(1, 201))  # 201 chunks, no hole, each writer got its own index
    assert output["refused"] == {
        "big": "payload_too_large",
        "''": "invalid_request",
        repr("k" * 65): "invalid_request",
        "'bad\\nkey'": "invalid_request",
    }
    assert output["local"] == ["one", "two", "three"]
    a = await sdk_read(handle.id, "a")
    assert [c["n"] for c in a] == list(range(201))  # the refused chunk left no trace
    assert await sdk_read(handle.id, "b") == ["only"]
    assert await sdk_read(handle.id, "words") == ["one", "two", "three"]
    assert await sdk_read(handle.id, "numbers") == list(range(300))  # wait_until_complete: all stored
    assert await sdk_read(handle.id, "numbers", start_index=295) == [295, 296, 297, 298, 299]
    assert await sdk_read(handle.id, "never-written") == []  # the run finished: an empty stream ends


async def _take(source: AsyncIterator[Any], n: int) -> AsyncIterator[Any]:
    async with contextlib.aclosing(source) as items:
        async for item in items:
            yield item
            n -= 1
            if n == 0:
                return


# Readers that drop and resume by index


class Progress:
    """How far a reader got; others may wait for it to pass an index."""

    def __init__(self) -> None:
        self.last = -1
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []

    def advance(self, index: int) -> None:
        self.last = index
        if self._waiters:
            still = []
            for threshold, waiter in self._waiters:
                if index >= threshold:
                    if not waiter.done():
                        waiter.set_result(None)
                else:
                    still.append((threshold, waiter))
            self._waiters = still

    async def reached(self, index: int) -> None:
        if self.last >= index:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append((index, waiter))
        await waiter


@dataclass
class Reader:
    """One reader's view: every chunk it got, checked to be the next index (so: in order, once)."""

    name: str
    drops: list[int]
    received: int = 0
    connections: int = 0
    progress: Progress = field(default_factory=Progress)

    def take(self, index: int, data: Any) -> None:
        assert index == self.received, f"{self.name}: got index {index}, expected {self.received}"
        assert data == index, f"{self.name}: chunk {index} holds {data!r}"
        self.received += 1
        self.progress.advance(index)

    def should_drop(self) -> bool:
        if self.drops and self.received > self.drops[0]:
            self.drops.pop(0)
            return True
        return False


async def read_sdk(reader: Reader, run_id: str, key: str) -> None:
    while True:
        reader.connections += 1
        dropped = False
        async with contextlib.aclosing(streams.read(run_id, key, start_index=reader.received)) as chunks:
            async for value in chunks:
                reader.take(reader.received, value)
                if reader.should_drop():
                    dropped = True
                    break
        if not dropped:
            return


async def next_frame(client: WsClient) -> Frame:
    if client.pending:
        return client.pending.popleft()
    frame: Frame = orjson.loads(await client.connection.recv())
    return frame


def stream_subscribe(sub_id: str, run_id: str, key: str, tok: str, start: int, **extra: Any) -> Frame:
    return {"type": "subscribe", "id": sub_id, "feed": "stream", "runId": run_id, "key": key,
            "startIndex": start, "token": tok, **extra}  # fmt: skip


async def read_ws(reader: Reader, server: RunningServer, run_id: str, key: str, tok: str) -> Frame:
    """Reads with WebSocket stream subscriptions; drops alternate between closing the connection and
    unsubscribing on it. Returns the final `end` frame."""
    while True:
        async with connect(server.ws_url, max_size=None) as client:
            while True:
                reader.connections += 1
                sub_id = f"s{reader.connections}"
                await client.send(stream_subscribe(sub_id, run_id, key, tok, reader.received))
                while True:
                    frame = await next_frame(client)
                    if frame.get("id") != sub_id:
                        continue  # a chunk of an earlier subscription of this connection, or its `unsubscribed`
                    if frame["type"] == "end":
                        assert frame == {"type": "end", "id": sub_id, "nextIndex": reader.received,
                                         "reason": "finished"}  # fmt: skip
                        return frame
                    assert frame["type"] == "chunk", frame
                    reader.take(frame["index"], frame["data"])
                    if reader.should_drop():
                        break
                if reader.connections % 2:
                    break  # close the connection
                await client.send({"type": "unsubscribe", "id": sub_id})


async def read_sse(reader: Reader, http: httpx.AsyncClient, run_id: str, key: str, tok: str) -> None:
    while True:
        reader.connections += 1
        headers = {"Authorization": f"Bearer {tok}", "Last-Event-ID": str(reader.received - 1)}
        dropped = False
        async with http.stream("GET", f"/realtime/v1/streams/{run_id}/{key}", headers=headers) as response:
            assert response.status_code == 200
            async for event_id, value in sse_events(response):
                reader.take(event_index(event_id), value)
                if reader.should_drop():
                    dropped = True
                    break
        if not dropped:
            return


def drop_points(rng: random.Random, n: int, count: int) -> list[int]:
    return sorted(rng.sample(range(n - 1), count))


BIG_N = 100_000


@pytest.mark.cluster(False)  # a minute on a cluster too, with nothing of the cluster's own to show
async def test_every_reader_gets_100k_chunks_exactly_once_through_random_drops(server: RunningServer) -> None:
    n = BIG_N
    rng = random.Random(20240917)
    gate = unique("gate")
    handle = await tasks.trigger(
        "stream-chunks", {"count": n, "burst": 2000, "pause": 0.005, "gate": gate, "gate_at": 1000}
    )
    tok = handle.public_access_token
    key = "numbers"
    readers = [Reader(name, drop_points(rng, n, 5)) for name in ("sdk", "ws1", "ws2", "sse", "late-ws", "late-sse")]
    sdk, ws1, ws2, sse, late_ws, late_sse = readers
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http, asyncio.timeout(150):

        async def late(reader: Reader, after: Reader, at: int, read: Any) -> None:
            await after.progress.reached(at)  # joins mid-stream, at a random point of another reader
            await read

        jobs = [
            read_sdk(sdk, handle.id, key),
            read_ws(ws1, server, handle.id, key, tok),
            read_ws(ws2, server, handle.id, key, tok),
            read_sse(sse, http, handle.id, key, tok),
            late(late_ws, ws1, rng.randrange(2000, n // 2), read_ws(late_ws, server, handle.id, key, tok)),
            late(late_sse, sse, rng.randrange(2000, n // 2), read_sse(late_sse, http, handle.id, key, tok)),
        ]
        running = [asyncio.ensure_future(job) for job in jobs]
        await ws1.progress.reached(999)  # the first 1,000 chunks were written before the gate
        open_gate(gate)
        await asyncio.gather(*running)
    elapsed = time.monotonic() - started
    print(f"\n100k stream on {'redis' if server.settings.redis_url else 'memory'}: {elapsed:.1f} s")
    for reader in readers:
        assert reader.received == n, reader.name
        assert reader.connections == 6, (reader.name, reader.connections)  # 5 drops, each resumed
    final = await until_final(handle.id)
    assert final.output == n


async def test_reader_after_the_run_finished_gets_the_whole_stream_and_an_end(server: RunningServer) -> None:
    handle = await tasks.trigger("stream-chunks", {"count": 2500, "burst": 700})
    await until_final(handle.id)
    tok = handle.public_access_token
    assert await sdk_read(handle.id, "numbers") == list(range(2500))
    reader = Reader("ws", [])
    async with asyncio.timeout(TIMEOUT):
        end = await read_ws(reader, server, handle.id, "numbers", tok)
    assert reader.received == 2500 and end["nextIndex"] == 2500
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        sse = Reader("sse", [])
        await read_sse(sse, http, handle.id, "numbers", tok)
    assert sse.received == 2500


async def test_catching_up_on_large_chunks_reads_bounded_pages(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,000 chunks of 512 KiB would be half a gigabyte in one storage read: pages stop at 8 MiB."""
    bridge = server.app_bridge
    handle = await tasks.trigger("echo", {"big": True})
    await until_final(handle.id)
    filler = "x" * (512 * 1024)  # a chunk of about 512 KiB encoded
    for first in range(0, 48, 16):
        batch = [orjson.dumps([i, filler]) for i in range(first, first + 16)]
        await bridge.broker.append_chunks(handle.id, "big", batch)
    page_sizes: list[int] = []
    read_chunks = bridge.broker.read_chunks

    async def measured(*args: Any) -> StreamPage:
        page = await read_chunks(*args)
        page_sizes.append(sum(map(len, page.chunks)))
        return page

    monkeypatch.setattr(bridge.broker, "read_chunks", measured)
    received = [value async for value in streams.read(handle.id, "big")]
    assert [value[0] for value in received] == list(range(48))
    assert max(page_sizes) <= READ_PAGE_BYTES and len(page_sizes) >= 3
    one = await read_chunks(handle.id, "big", 0, 10, 10)  # the first chunk comes whatever its size
    assert len(one.chunks) == 1


async def test_stream_of_a_run_that_finished_without_chunks_ends_at_zero(server: RunningServer) -> None:
    gate = unique("gate")
    handle = await tasks.trigger("wait-for-gate", {"gate": gate})
    async with connect(server.ws_url) as client:
        await client.send(stream_subscribe("s", handle.id, "ai", handle.public_access_token, 0))
        await client.sync()  # subscribed: nothing to send yet
        open_gate(gate)
        frames = await client.frames_until(of_type("end", "s"))
    assert frames == [{"type": "end", "id": "s", "nextIndex": 0, "reason": "finished"}]


async def test_resume_from_the_middle_and_beyond_the_end(server: RunningServer) -> None:
    handle = await tasks.trigger("stream-chunks", {"count": 50})
    await until_final(handle.id)
    async with connect(server.ws_url) as client:
        await client.send(stream_subscribe("mid", handle.id, "numbers", handle.public_access_token, 42))
        frames = await client.frames_until(of_type("end", "mid"))
        await client.send(stream_subscribe("past", handle.id, "numbers", handle.public_access_token, 70))
        past = await client.frames_until(of_type("end", "past"))
    assert [(f["index"], f["data"]) for f in frames[:-1]] == [(i, i) for i in range(42, 50)]
    assert frames[-1] == {"type": "end", "id": "mid", "nextIndex": 50, "reason": "finished"}
    # 70 was never stored: a reader there read a stream that is lost (or made the index up)
    assert [{k: f[k] for k in ("type", "nextIndex", "reason", "code")} for f in past] == [
        {"type": "end", "nextIndex": 70, "reason": "error", "code": "stream_reset"}
    ]


async def test_slow_ws_reader_is_paused_and_then_gets_every_chunk_once(backend_settings: Settings) -> None:
    from tests.test_websocket import stalled_client

    n = 6000
    async with server_with(backend_settings, slow_consumer_grace_seconds=10) as server:
        gate = unique("gate")
        handle = await tasks.trigger("stream-chunks", {"count": n, "key": "big", "gate": gate, "gate_at": 0})
        async with stalled_client(server) as slow:
            await slow.send(stream_subscribe("s", handle.id, "big", handle.public_access_token, 0))
            await slow.sync()
            open_gate(gate)
            await until_final(handle.id)  # every chunk written while `slow` read nothing
            got = []
            async with asyncio.timeout(TIMEOUT):
                while True:
                    frame = await next_frame(slow)
                    if frame["type"] == "end":
                        break
                    assert frame["type"] == "chunk" and frame["id"] == "s", frame
                    got.append((frame["index"], frame["data"]))
            await slow.sync()  # still open: no 4008
    assert got == [(i, i) for i in range(n)]
    assert frame == {"type": "end", "id": "s", "nextIndex": n, "reason": "finished"}


async def test_unsubscribe_stops_the_stream_and_frees_the_subscription(server: RunningServer) -> None:
    gate = unique("gate")
    handle = await tasks.trigger("stream-chunks", {"count": 20, "gate": gate, "gate_at": 10})
    tok = handle.public_access_token
    async with connect(server.ws_url) as client:
        await client.send(stream_subscribe("s", handle.id, "numbers", tok, 0))
        frames = [await client.expect(of_type("chunk", "s")) for _ in range(10)]
        assert [f["index"] for f in frames] == list(range(10))
        await client.unsubscribe("s")
        await client.expect(of_type("unsubscribed", "s"))
        open_gate(gate)
        await until_final(handle.id)
        assert [f for f in await client.sync() if f.get("id") == "s"] == []
        await client.send(stream_subscribe("s", handle.id, "numbers", tok, 18))  # the id is free again
        frames = await client.frames_until(of_type("end", "s"))
    assert [f.get("index") for f in frames] == [18, 19, None]


async def test_stream_subscriptions_count_toward_the_connection_limit(backend_settings: Settings) -> None:
    async with server_with(backend_settings, max_subscriptions_per_connection=2) as server:
        gate = unique("gate")
        handle = await tasks.trigger("wait-for-gate", {"gate": gate})
        tok = handle.public_access_token
        async with connect(server.ws_url) as client:
            await client.send(stream_subscribe("a", handle.id, "x", tok, 0))
            await client.subscribe_run("b", handle.id, tok)
            await client.expect(of_type("snapshot", "b"))
            await client.send(stream_subscribe("c", handle.id, "y", tok, 0))
            await client.expect(error("too_many", "c"))
            open_gate(gate)
            await client.expect(of_type("end", "a"))  # an ended stream frees its place
            await client.send(stream_subscribe("c", handle.id, "y", tok, 0))
            await client.expect(of_type("end", "c"))


async def test_ws_stream_errors(server: RunningServer) -> None:
    handle = await tasks.trigger("stream-chunks", {"count": 3})
    other = await tasks.trigger("echo", 1)
    tok = handle.public_access_token
    async with connect(server.ws_url) as client:
        await client.send(stream_subscribe("nf", "run_000000000000000000000000", "numbers", SECRET_KEY, 0))
        await client.expect(error("not_found", "nf"))
        await client.send(stream_subscribe("fb", handle.id, "numbers", other.public_access_token, 0))
        await client.expect(error("forbidden", "fb"))
        await client.send(stream_subscribe("ua", handle.id, "numbers", "not-a-token", 0))
        await client.expect(error("unauthorized", "ua"))
        bad: list[dict[str, Any]] = [
            {"startIndex": -1},
            {"startIndex": 1.5},
            {"startIndex": "0"},
            {"startIndex": True},
            {"startIndex": MAX_STREAM_INDEX + 1},
            {"startIndex": 2**64 - 1},  # was backend_unavailable on Redis: entry id 0-2^64 is out of range
            {"key": ""},
            {"key": "k" * 65},
            {"key": "a\nb"},
            {"key": 7},
            {"timeoutInSeconds": 0},
            {"timeoutInSeconds": 601},
            {"timeoutInSeconds": "60"},
            {"epoch": ""},
            {"epoch": "e" * 65},
            {"epoch": "a-b"},
            {"epoch": 7},
        ]
        for i, fields in enumerate(bad):
            await client.send({**stream_subscribe(f"bad{i}", handle.id, "numbers", tok, 0), **fields})
            await client.expect(error("invalid_request", f"bad{i}"))
        await until_final(handle.id)
        await client.send(stream_subscribe("ok", handle.id, "numbers", tok, 0))
        frames = await client.frames_until(of_type("end", "ok"))
        await client.send(stream_subscribe("last", handle.id, "numbers", tok, MAX_STREAM_INDEX))
        (end,) = await client.frames_until(of_type("end", "last"))
        assert end["nextIndex"] == MAX_STREAM_INDEX and end["code"] == "stream_reset"  # past the 3 stored
    assert [f.get("index") for f in frames] == [0, 1, 2, None]


async def test_ws_stream_ends_with_timeout_when_idle(server: RunningServer) -> None:
    gate = unique("gate")
    handle = await tasks.trigger("stream-chunks", {"count": 5, "gate": gate, "gate_at": 2})
    async with connect(server.ws_url) as client:
        await client.send(
            stream_subscribe("s", handle.id, "numbers", handle.public_access_token, 0, timeoutInSeconds=1)
        )
        frames = await client.frames_until(of_type("end", "s"))
        open_gate(gate)
    assert [f.get("index") for f in frames] == [0, 1, None]
    assert frames[-1] == {"type": "end", "id": "s", "nextIndex": 2, "reason": "timeout"}


# SSE


async def sse_lines(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> tuple[int, list[str]]:
    """A response's status and lines, read to its clean end (a cut response raises)."""
    async with http.stream("GET", path, headers=headers) as response:
        if response.status_code != 200:
            await response.aread()
            return response.status_code, []
        return 200, [line async for line in response.aiter_lines()]


async def cut_sse_lines(http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> list[str]:
    """The lines of a 200 response the bridge cuts (its body never ends): what an official client reconnects after."""
    lines: list[str] = []
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200
        with pytest.raises(httpx.RemoteProtocolError):  # closed without the chunked body's last chunk
            async for line in response.aiter_lines():
                lines.append(line)
    return lines


def events(lines: list[str]) -> list[tuple[int, Any]]:
    ids = [event_index(line[4:]) for line in lines if line.startswith("id: ")]
    data = [orjson.loads(line[6:]) for line in lines if line.startswith("data: ")]
    return list(zip(ids, data, strict=True))


async def test_sse_route(server: RunningServer) -> None:
    gate = unique("gate")
    handle = await tasks.trigger("stream-chunks", {"count": 30, "gate": gate, "gate_at": 10})
    other = await tasks.trigger("echo", 1)
    tok = handle.public_access_token
    path = f"/realtime/v1/streams/{handle.id}/numbers"
    auth = {"Authorization": f"Bearer {tok}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        # idle end while the task waits at its gate, from the start, then from Last-Event-ID
        status, lines = await sse_lines(http, path, {**auth, "Timeout-Seconds": "1"})
        assert status == 200 and events(lines) == [(i, i) for i in range(10)]
        status, lines = await sse_lines(http, path, {**auth, "Timeout-Seconds": "1", "Last-Event-ID": "6"})
        assert events(lines) == [(i, i) for i in range(7, 10)]
        status, lines = await sse_lines(
            http, path, {**auth, "Timeout-Seconds": "1", "X-Trigger-Stream-Start": "latest"}
        )
        assert status == 200 and events(lines) == []
        # Headers arrive as Latin-1: "²" passes str.isdigit() but not int(); "1_0" and "+5" pass int()
        odd_numbers = ("x", "1.5", "²", "1²", "1_0", "+5", "9" * 5000)
        for name, bad in [*(("Timeout-Seconds", v) for v in ("0", "601", *odd_numbers)),
                          *(("Last-Event-ID", v) for v in ("-2", str(MAX_STREAM_INDEX), *odd_numbers))]:  # fmt: skip
            response = await http.get(path, headers={**auth, name: bad.encode("latin-1")})
            assert response.status_code == 400, (name, bad[:10], response.text)
            assert response.json()["code"] == "invalid_request", response.text
            assert response.json()["error"].startswith(f"{name} must be a whole number from "), response.text
        assert (await sse_lines(http, path, {}))[0] == 401
        assert (await sse_lines(http, path, {"Authorization": f"Bearer {other.public_access_token}"}))[0] == 403
        unknown = "/realtime/v1/streams/run_000000000000000000000000/numbers"
        assert (await sse_lines(http, unknown, {"Authorization": f"Bearer {SECRET_KEY}"}))[0] == 404

        async def latest() -> list[tuple[int, Any]]:
            return events((await sse_lines(http, path, {**auth, "X-Trigger-Stream-Start": "latest"}))[1])

        tail = asyncio.ensure_future(latest())
        open_gate(gate)
        await until_final(handle.id)
        async with asyncio.timeout(TIMEOUT):
            got = await tail
        assert got == [(i, i) for i in range(got[0][0] if got else 30, 30)] and all(i >= 10 for i, _ in got)
        # after the run finished and the stream drained: a clean end, no timeout needed
        status, lines = await sse_lines(http, path, {**auth, "Last-Event-ID": "24"})
        assert events(lines) == [(i, i) for i in range(25, 30)]
        # Resuming past the 30 chunks stored: some were lost, or the client is wrong; 2^64 - 1 is not read at all.
        for last in ("30", str(MAX_STREAM_INDEX - 1)):
            response = await http.get(path, headers={**auth, "Last-Event-ID": last})
            assert response.status_code == 409 and response.json()["code"] == "stream_reset", response.text
        status, _ = await sse_lines(http, path, {**auth, "Last-Event-ID": str(2**64 - 1)})
        assert status == 400


async def test_sse_response_ends_when_its_reader_fails(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    handle = await tasks.trigger("stream-chunks", {"count": 3})
    await until_final(handle.id)

    read_chunks = server.app_bridge.broker.read_chunks
    reads = 0

    async def backend_restarting(*args: Any) -> StreamPage:
        nonlocal reads
        reads += 1
        if reads > 1:  # the route's own check before it answers passes; the reader's first read fails
            raise ConnectionError("backend restarting")
        return await read_chunks(*args)

    monkeypatch.setattr(server.app_bridge.broker, "read_chunks", backend_restarting)
    auth = {"Authorization": f"Bearer {handle.public_access_token}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        async with asyncio.timeout(5):  # under the 10 s ping interval: it ended, it did not go on pinging
            lines = await cut_sse_lines(http, f"/realtime/v1/streams/{handle.id}/numbers", auth)
    assert events(lines) == [] and ": ping" not in lines  # cut: the official client resumes, not "done"
    failures = [r for r in caplog.records if "its reader failed" in r.getMessage()]
    assert len(failures) == 1 and "backend restarting" in failures[0].getMessage(), failures


# The official client


async def test_official_client_reads_the_stream_from_the_start_and_from_the_middle(server: RunningServer) -> None:
    handle = await tasks.trigger("stream-chunks", {"count": 40, "burst": 7, "pause": 0.01})
    tok = handle.public_access_token
    result = await run_script(server, "stream-read.mjs", handle.id, "numbers", tok, "0")
    assert result.ok, result.explain()
    assert result["chunks"] == list(range(40))
    epoch = (await server.app_bridge.broker.read_chunks(handle.id, "numbers", 0, 0, 0)).epoch
    assert result["ids"] == [f"{i}-{epoch}" for i in range(40)]  # event ids: the index and the stream's epoch
    result = await run_script(server, "stream-read.mjs", handle.id, "numbers", tok, "23")
    assert result.ok, result.explain()
    assert result["chunks"] == list(range(23, 40))


# A writer that cannot store a batch: it retries that batch in order, or the stream fails for everyone


@registry.add_task("pipe-through-outage")
async def pipe_through_outage(payload: dict[str, Any]) -> dict[str, Any]:
    """Pipes 0..count-1 to "out". With a `gate`: once the first `gate_at` are stored, sets `gates[reached]`
    and waits for the gate. A failed stream is caught: the result tells where it stopped, and whether a
    later append raised too."""
    count = int(payload["count"])
    out = streams.define("out")

    async def numbers() -> AsyncIterator[int]:
        for number in range(count):
            if "gate" in payload and number == payload["gate_at"]:
                await require_run_scope("test").streams.flush()
                gates.setdefault(payload["reached"], asyncio.Event()).set()
                await gates.setdefault(payload["gate"], asyncio.Event()).wait()
            yield number

    try:
        await out.pipe(numbers()).wait_until_complete()
    except StreamFailedError as failed:
        try:
            await out.append("later")
        except StreamFailedError as later:
            return {"failed": failed.next_index, "later": later.next_index, "message": failed.message}
        return {"failed": failed.next_index, "later": None}
    return {"stored": count}


async def stored_chunks(broker: Broker, run_id: str, key: str) -> list[Any]:
    """Every chunk in storage, in index order."""
    chunks: list[Any] = []
    while page := (await broker.read_chunks(run_id, key, len(chunks), 1000, 1 << 24)).chunks:
        chunks.extend(orjson.loads(data) for data in page)
    return chunks


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output_streams, "WRITE_RETRY_FIRST_DELAY", 0.001)
    monkeypatch.setattr(output_streams, "WRITE_RETRY_MAX_DELAY", 0.001)


@pytest.mark.usefixtures("quick_retries")
async def test_a_batch_that_fails_to_store_is_retried_in_order_and_stored_once(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every batch fails twice: once before storing, once after (its answer lost). The retries store each
    chunk once, in order, at its index; later chunks wait behind the failing batch."""
    broker = server.app_bridge.broker
    real = broker.append_chunks
    calls: list[tuple[int | None, int]] = []

    async def flaky(run_id: str, key: str, chunks: Any, first_index: int | None = None) -> int:
        calls.append((first_index, len(chunks)))
        if key == "out" and len(calls) % 3 == 1:
            raise BackendUnavailableError("Redis is unavailable: appending to a stream failed (down)")
        if key == "out" and len(calls) % 3 == 2:
            await real(run_id, key, chunks, first_index)
            raise BackendUnavailableError("Redis is unavailable: appending to a stream failed (answer lost)")
        return await real(run_id, key, chunks, first_index)

    monkeypatch.setattr(broker, "append_chunks", flaky)
    count = 5000
    handle = await tasks.trigger("pipe-through-outage", {"count": count})
    final = await until_final(handle.id)
    assert final.status is RunStatus.COMPLETED and final.output == {"stored": count}, final
    assert await stored_chunks(broker, handle.id, "out") == list(range(count))
    assert await sdk_read(handle.id, "out") == list(range(count))
    # Each batch was tried three times at the same expected index, and the next started where it ended.
    assert len(calls) % 3 == 0 and len(calls) > 3
    batches = calls[::3]
    assert all(calls[i] == calls[i + 1] == calls[i + 2] for i in range(0, len(calls), 3)), calls
    assert [first for first, _ in batches] == [sum(n for _, n in batches[:i]) for i in range(len(batches))]


@pytest.mark.usefixtures("quick_retries")
async def test_a_writer_that_gives_up_fails_the_stream_for_the_task_and_every_reader(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output_streams, "WRITE_RETRY_ATTEMPTS", 3)
    broker = server.app_bridge.broker
    real = broker.append_chunks
    tries: list[int | None] = []

    async def down_after_the_first_batch(run_id: str, key: str, chunks: Any, first_index: int | None = None) -> int:
        if key == "out" and first_index:
            tries.append(first_index)
            raise BackendUnavailableError("Redis is unavailable: appending to a stream failed (down)")
        return await real(run_id, key, chunks, first_index)

    monkeypatch.setattr(broker, "append_chunks", down_after_the_first_batch)
    gate, reached = unique("gate"), unique("reached")
    handle = await tasks.trigger(
        "pipe-through-outage", {"count": 3000, "gate": gate, "gate_at": 10, "reached": reached}
    )
    tok = handle.public_access_token
    async with connect(server.ws_url) as client:
        # A live reader, subscribed while the stream is healthy.
        await client.send({"type": "subscribe", "id": "live", "feed": "stream", "runId": handle.id, "key": "out",
                           "token": tok})  # fmt: skip
        async with asyncio.timeout(TIMEOUT):
            await gates.setdefault(reached, asyncio.Event()).wait()
        open_gate(gate)
        final = await until_final(handle.id)
        stopped = final.output["failed"]  # type: ignore[index]
        assert stopped >= 10 and final.output == {
            "failed": stopped,
            "later": stopped,
            "message": f"stream 'out' of run {handle.id} failed: it stops at index {stopped} (chunk {stopped} "
            "could not be stored: Redis is unavailable: appending to a stream failed (down))",
        }
        assert len(tries) == 3 and set(tries) == {stopped}  # one batch, tried three times; nothing after it
        assert await stored_chunks(broker, handle.id, "out") == list(range(stopped))
        expected_end = {"type": "end", "nextIndex": stopped, "reason": "error", "code": "stream_failed"}
        frames = await client.frames_until(of_type("end", "live"))
        assert [f["data"] for f in frames if f["type"] == "chunk"] == list(range(stopped))
        assert {k: frames[-1][k] for k in expected_end} == expected_end
        assert frames[-1]["message"] == final.output["message"]  # type: ignore[index]
        # A reader that comes afterwards, from the middle.
        await client.send({"type": "subscribe", "id": "late", "feed": "stream", "runId": handle.id, "key": "out",
                           "startIndex": 5, "token": tok})  # fmt: skip
        frames = await client.frames_until(of_type("end", "late"))
        assert [f["data"] for f in frames if f["type"] == "chunk"] == list(range(5, stopped))
        assert {k: frames[-1][k] for k in expected_end} == expected_end
    # The SDK: every stored chunk, then StreamFailedError.
    read: list[Any] = []
    with pytest.raises(StreamFailedError) as failed:
        async with asyncio.timeout(TIMEOUT):
            async for chunk in streams.read(handle.id, "out"):
                read.append(chunk)
    assert read == list(range(stopped)) and failed.value.next_index == stopped
    # SSE: the stored chunks, then the response is cut (no clean end: the official client reconnects), and
    # resuming past them is refused.
    path = f"/realtime/v1/streams/{handle.id}/out"
    auth = {"Authorization": f"Bearer {tok}"}
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        assert events(await cut_sse_lines(http, path, auth)) == [(i, i) for i in range(stopped)]
        response = await http.get(path, headers={**auth, "Last-Event-ID": str(stopped - 1)})
        assert response.status_code == 409 and response.json()["code"] == "stream_failed", response.text


# A Redis restart mid-stream: the writer and readers of both protocols, exactly once or an explicit error

RESUME_ATTEMPTS = 100  # a reader's resubscriptions after explicit errors (bounded; each after a backoff)


@dataclass
class Outcome:
    """How a reader that resumes after every explicit error ended: the chunks it got (in order, once each, as
    `Reader.take` checks), where the stream stopped if it failed, and the explicit errors it resumed after."""

    reader: Reader
    failed_at: int | None = None
    errors: list[str] = field(default_factory=list)
    refused: asyncio.Event = field(default_factory=asyncio.Event)  # set at its first error

    def error(self, what: str) -> None:
        self.errors.append(what)
        self.refused.set()
        assert len(self.errors) < RESUME_ATTEMPTS, f"{self.reader.name}: {self.errors[-5:]}"


async def backoff(outcome: Outcome) -> None:
    await asyncio.sleep(min(1.0, 0.02 * 2 ** len(outcome.errors)))  # the hooks' growing delay between retries


async def resuming_ws(outcome: Outcome, server: RunningServer, run_id: str, tok: str) -> None:
    """Resubscribes from its next index after every `error` frame, as the hooks do; ends on `end`."""
    reader = outcome.reader
    async with connect(server.ws_url, max_size=None) as client:
        while True:
            reader.connections += 1
            sub_id = f"s{reader.connections}"
            await client.send(stream_subscribe(sub_id, run_id, "out", tok, reader.received))
            while True:
                frame = await next_frame(client)
                if frame["type"] == "chunk":
                    reader.take(frame["index"], frame["data"])
                elif frame["type"] == "end":
                    assert frame["nextIndex"] == reader.received, frame
                    if frame["reason"] == "error":
                        assert frame["code"] == "stream_failed", frame
                        outcome.failed_at = frame["nextIndex"]
                    else:
                        assert frame["reason"] == "finished", frame
                    return
                else:
                    assert frame["type"] == "error" and frame["code"] == "backend_unavailable", frame
                    outcome.error(frame["code"])
                    await backoff(outcome)
                    break


async def resuming_sse(outcome: Outcome, server: RunningServer, run_id: str, tok: str) -> None:
    """Resumes with Last-Event-ID after a 503 or a response that ended or was cut; done after a 409
    `stream_failed`, or once a response ended without a new chunk after the run finished."""
    reader = outcome.reader
    path = f"/realtime/v1/streams/{run_id}/out"
    epoch = ""  # from the event ids (`<index>-<epoch>`), sent back with the next index as the official client does
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        while True:
            reader.connections += 1
            before = reader.received
            last_event_id = f"{reader.received - 1}-{epoch}" if epoch else str(reader.received - 1)
            headers = {"Authorization": f"Bearer {tok}", "Last-Event-ID": last_event_id}
            try:
                async with http.stream("GET", path, headers=headers) as response:
                    if response.status_code != 200:
                        body = orjson.loads(await response.aread())
                        if response.status_code == 409:
                            assert body["code"] == "stream_failed", body
                            outcome.failed_at = reader.received
                            return
                        assert response.status_code == 503, (response.status_code, body)
                        outcome.error("503")
                        await backoff(outcome)
                        continue
                    async for event_id, value in sse_events(response):
                        epoch = event_id.partition("-")[2]
                        reader.take(event_index(event_id), value)
            except httpx.RemoteProtocolError:  # cut: its reader failed, and the client resumes
                pass
            if reader.received == before:  # ended or cut without a new chunk: finished, or its reader failed
                try:
                    if (await server.app_bridge.engine.retrieve(run_id)).status.is_final:
                        return
                except BackendUnavailableError:
                    pass
                outcome.error("ended")
                await backoff(outcome)


async def resuming_sdk(outcome: Outcome, run_id: str) -> None:
    """`streams.read` from its next index again after BackendUnavailableError; done at its end or failure."""
    reader = outcome.reader
    while True:
        reader.connections += 1
        try:
            async for value in streams.read(run_id, "out", start_index=reader.received):
                reader.take(reader.received, value)
        except StreamFailedError as failed:
            assert failed.next_index == reader.received, (failed.next_index, reader.received)
            outcome.failed_at = failed.next_index
            return
        except BackendUnavailableError as unavailable:
            outcome.error(unavailable.code)
            await backoff(outcome)
            continue
        return


@pytest.mark.parametrize("outage", ["shutdown", "sigkill", "sigkill-past-the-writer-retries"])
async def test_a_redis_restart_mid_stream_leaves_the_writer_and_every_reader_exact_or_explicitly_failed(
    outage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-server (AOF, fsync always) stops (SIGTERM, or SIGKILL) while the task pipes and readers of every
    kind read live, and comes back once the writer failed to store and every reader arriving meanwhile was
    refused; the last case keeps it down until the writer gave up (its retries shortened). Every chunk is
    stored once, in order, or the stream ends with the failure every reader sees; each reader, resuming from
    its next index after each explicit error, gets exactly the stored chunks, once each, in order: never a
    silent gap or a duplicate."""
    redis_server = start_redis_server(persistent=True)
    settings = suite_settings(redis_url=redis_server.url, key_prefix=unique("outage"))
    server, task = await start_server(settings)
    gives_up = outage == "sigkill-past-the-writer-retries"
    try:
        broker = server.app_bridge.broker
        real_append, real_fail = broker.append_chunks, broker.fail_stream
        writer_failed, redis_back = asyncio.Event(), asyncio.Event()  # writer_failed: it failed once, or gave up

        async def watched(run_id: str, key: str, chunks: Any, first_index: int | None = None) -> int:
            try:
                return await real_append(run_id, key, chunks, first_index)
            except BackendUnavailableError:
                if not gives_up:
                    writer_failed.set()
                raise

        async def marked_once_redis_is_back(run_id: str, key: str, reason: str) -> int:
            writer_failed.set()
            await redis_back.wait()  # Redis is back before the writer's retries of the mark run out
            return await real_fail(run_id, key, reason)

        if gives_up:
            monkeypatch.setattr(output_streams, "WRITE_RETRY_ATTEMPTS", 3)
            monkeypatch.setattr(output_streams, "WRITE_RETRY_FIRST_DELAY", 0.001)
            broker.fail_stream = marked_once_redis_is_back  # type: ignore[method-assign]
        count, gate, reached = 5000, unique("gate"), unique("reached")
        handle = await tasks.trigger(
            "pipe-through-outage", {"count": count, "gate": gate, "gate_at": 1000, "reached": reached}
        )
        tok = handle.public_access_token
        outcomes = {name: Outcome(Reader(name, [])) for name in ("ws", "sse", "sdk", "late-ws", "late-sse", "late-sdk")}

        def read(name: str) -> asyncio.Task[None]:
            outcome = outcomes[name]
            if name.endswith("ws"):
                return asyncio.create_task(resuming_ws(outcome, server, handle.id, tok))
            if name.endswith("sse"):
                return asyncio.create_task(resuming_sse(outcome, server, handle.id, tok))
            return asyncio.create_task(resuming_sdk(outcome, handle.id))

        async with asyncio.timeout(90):
            reading = [read(name) for name in ("ws", "sse", "sdk")]
            await gates.setdefault(reached, asyncio.Event()).wait()
            for name in ("ws", "sse", "sdk"):
                await outcomes[name].reader.progress.reached(999)  # live readers, at the head of the stream
            broker.append_chunks = watched  # type: ignore[method-assign]
            await asyncio.to_thread(redis_server.halt, kill=outage.startswith("sigkill"))
            open_gate(gate)  # the task pipes the other 4,000 while Redis is down
            late = [read(name) for name in ("late-ws", "late-sse", "late-sdk")]  # readers arriving meanwhile
            await writer_failed.wait()
            for name in ("late-ws", "late-sse", "late-sdk"):
                await outcomes[name].refused.wait()
            await asyncio.to_thread(redis_server.start_again)
            redis_back.set()
            final = await until_final(handle.id)
            await asyncio.gather(*reading, *late)
        stored = await stored_chunks(broker, handle.id, "out")
        failed_at = len(stored) if gives_up else None
        if failed_at is None:  # the writer's retries outlasted the outage
            assert final.status is RunStatus.COMPLETED and final.output == {"stored": count}, final
            assert stored == list(range(count))
        else:  # explicit: the task and every reader are told where the stream stopped
            assert failed_at >= 1000 and stored == list(range(failed_at))
            assert final.output == {"failed": failed_at, "later": failed_at, "message": final.output["message"]}  # type: ignore[index]
        for outcome in outcomes.values():
            assert outcome.reader.received == len(stored), (outcome.reader.name, outcome.reader.received)
            assert outcome.failed_at == failed_at, outcome.reader.name
        errors = {name: len(outcome.errors) for name, outcome in outcomes.items()}
        print(f"\nredis {outage}: {len(stored)} chunks stored, failed at {failed_at}; errors resumed after: {errors}")
    finally:
        await stop_server(server, task)
        redis_server.stop()
