"""Stream epochs: storage lost under a stream (Redis flushed, its keys gone, an in-memory bridge restarted)
is told to every reader (`stream_reset`), never resumed at an index that now holds something else, and a
writer that goes on after it stores nothing at the indexes readers already saw."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from bridge import streams, tasks
from bridge.backends.base import StreamPage
from bridge.backends.channels import stream_channel
from bridge.backends.memory import MemoryBroker
from bridge.config import Settings
from bridge.errors import StreamFailedError, StreamResetError
from bridge.runtime import output_streams
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.input_streams import input_key
from bridge.runtime.output_streams import Chunk, StreamReader
from bridge.testing.redis_server import RedisServer, start_redis_server
from tests.conftest import RunningServer, serving, start_server, stop_server, suite_settings
from tests.support.helpers import event_index, open_gate, unique, until_final
from tests.support.official_client import run_script
from tests.support.tasks import gates, registry
from tests.support.ws_client import Frame, WsClient, connect, of_type
from tests.test_streams import events, stored_chunks, stream_subscribe

TIMEOUT = 30.0
reports: dict[str, dict[str, Any]] = {}  # what `append-across-a-flush` saw, by its `report` name


@registry.add_task("append-across-a-flush")
async def append_across_a_flush(payload: dict[str, Any]) -> None:
    """Appends 0..before-1 to "out", waits for the gate, then appends twice more; reports what those raised
    (its run may be gone by then, output and all)."""
    out = streams.define("out")
    for number in range(payload["before"]):
        await out.append(number)
    await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    report: dict[str, Any] = {}
    for attempt in ("after", "later"):
        try:
            report[attempt] = await out.append(attempt)
        except StreamFailedError as failed:
            report[attempt] = ("stream_failed", failed.next_index)
    reports[payload["report"]] = report
    open_gate(payload["report"])


@dataclass
class SseReader:
    """Reads one SSE response to its end, or to its cut (what the official client reconnects after)."""

    lines: list[str] = field(default_factory=list)
    got: dict[int, asyncio.Event] = field(default_factory=dict)  # set once the event of that index arrived
    cut: bool = False

    async def read(self, http: httpx.AsyncClient, path: str, headers: dict[str, str]) -> None:
        async with http.stream("GET", path, headers=headers) as response:
            assert response.status_code == 200
            try:
                async for line in response.aiter_lines():
                    self.lines.append(line)
                    if line.startswith("id: "):
                        self.got.setdefault(event_index(line[4:]), asyncio.Event()).set()
            except httpx.RemoteProtocolError:  # closed without the chunked body's end
                self.cut = True

    async def reached(self, index: int) -> None:
        await self.got.setdefault(index, asyncio.Event()).wait()


@dataclass
class SdkReader:
    values: list[Any] = field(default_factory=list)
    got: dict[int, asyncio.Event] = field(default_factory=dict)

    async def read(self, run_id: str, key: str) -> StreamResetError:
        with pytest.raises(StreamResetError) as reset:
            async for value in streams.read(run_id, key, timeout_in_seconds=None):
                self.values.append(value)
                self.got.setdefault(len(self.values) - 1, asyncio.Event()).set()
        return reset.value

    async def reached(self, index: int) -> None:
        await self.got.setdefault(index, asyncio.Event()).wait()


def reset_end(frames: list[Frame]) -> dict[str, Any]:
    end = frames[-1]
    assert end["type"] == "end" and end["message"].startswith("stream "), end
    return {k: end[k] for k in ("nextIndex", "reason", "code")}


async def test_a_redis_flushall_mid_stream_resets_every_reader_and_stores_nothing_the_writer_appends_after() -> None:
    redis_server = start_redis_server()  # the test's own: FLUSHALL wipes everything on it
    server, serving_task = await start_server(suite_settings(redis_url=redis_server.url, key_prefix=unique("flush")))
    raw = Redis.from_url(redis_server.url)
    try:
        gate, report = unique("gate"), unique("report")
        handle = await tasks.trigger("append-across-a-flush", {"before": 10, "gate": gate, "report": report})
        tok = handle.public_access_token
        path = f"/realtime/v1/streams/{handle.id}/out"
        sse, sdk = SseReader(), SdkReader()
        async with (
            connect(server.ws_url) as ws,
            httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
            asyncio.timeout(TIMEOUT),
        ):
            await ws.send(stream_subscribe("live", handle.id, "out", tok, 0))
            sse_reading = asyncio.ensure_future(sse.read(http, path, {"Authorization": f"Bearer {tok}"}))
            sdk_reading = asyncio.ensure_future(sdk.read(handle.id, "out"))
            before = await ws.frames_until(lambda f: f.get("index") == 9)
            epoch = before[0]["epoch"]
            assert [(f["index"], f["data"]) for f in before] == [(i, i) for i in range(10)]
            assert all("epoch" not in f for f in before[1:])  # named once per subscription
            # A resume with the right epoch continues exactly.
            await ws.send({**stream_subscribe("resumed", handle.id, "out", tok, 6), "epoch": epoch})
            resumed = await ws.frames_until(lambda f: f.get("id") == "resumed" and f.get("index") == 9)
            assert [f["index"] for f in resumed if f["id"] == "resumed"] == [6, 7, 8, 9]
            await sse.reached(9)
            await sdk.reached(9)

            await raw.flushall()
            open_gate(gate)  # the task appends again: into storage that lost chunks 0 to 9

            ends: dict[str, list[Frame]] = {"live": [], "resumed": []}
            while not all(frames and frames[-1]["type"] == "end" for frames in ends.values()):
                frame = await ws.expect(lambda f: f.get("id") in ends)
                ends[frame["id"]].append(frame)
            for frames in ends.values():  # no chunk after the flush: only the end, and why
                assert len(frames) == 1 and reset_end(frames) == {
                    "nextIndex": 10,
                    "reason": "error",
                    "code": "stream_reset",
                }
            await sse_reading
            assert sse.cut and events(sse.lines) == [(i, i) for i in range(10)]
            assert [line for line in sse.lines if line.startswith("id: ")] == [f"id: {i}-{epoch}" for i in range(10)]
            reset = await sdk_reading
            assert sdk.values == list(range(10)) and reset.next_index == 10 and reset.code == "stream_reset"
            # The official client reconnects with its Last-Event-ID: the run is gone too, which it is told.
            response = await http.get(path, headers={"Authorization": f"Bearer {tok}", "Last-Event-ID": f"9-{epoch}"})
            assert response.status_code == 404, response.text

            # The writer: its appends raise, and nothing is stored at the indexes the readers saw.
            await gates.setdefault(report, asyncio.Event()).wait()
        assert reports[report] == {"after": ("stream_failed", 0), "later": ("stream_failed", 0)}
        broker = server.app_bridge.broker
        assert await stored_chunks(broker, handle.id, "out") == []
        failure = await broker.stream_failure(handle.id, "out")
        assert failure is not None and failure[0] == 0 and "fewer chunks than expected at index 10" in failure[1]
        page = await broker.read_chunks(handle.id, "out", 0, 0, 0)
        assert page.epoch and page.epoch != epoch  # the failure record started a new epoch
        fresh: list[Any] = []  # a new reader: nothing, then the failure, at index 0
        with pytest.raises(StreamFailedError) as failed:
            async for value in streams.read(handle.id, "out"):
                fresh.append(value)
        assert fresh == [] and failed.value.next_index == 0
    finally:
        await raw.aclose()
        await stop_server(server, serving_task)
        redis_server.stop()


async def lose_storage(server: RunningServer, run_id: str) -> None:
    """What FLUSHALL or the retention does to one run: its run, streams and everything else gone."""
    broker = server.app_bridge.broker
    if isinstance(broker, MemoryBroker):
        broker.evict_expired(time.monotonic() + server.settings.retention_seconds + 1)
        return
    raw = Redis.from_url(server.settings.redis_url or "")
    try:
        keys = [key async for key in raw.scan_iter(f"{server.settings.key_prefix}:{{{run_id}}}:*")]
        assert keys and await raw.delete(*keys) == len(keys)
    finally:
        await raw.aclose()


async def test_a_stream_lost_while_nobody_writes_resets_its_live_readers(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No writer stumbles on the loss and no notification comes: waiting readers check storage on their own."""
    monkeypatch.setattr(output_streams, "STORAGE_CHECK_SECONDS", 0.2)
    broker = server.app_bridge.broker
    read_chunks, reads, checked = broker.read_chunks, 0, asyncio.Event()

    async def counted(*args: Any) -> StreamPage:
        nonlocal reads
        reads += 1
        if reads >= 12:
            checked.set()
        return await read_chunks(*args)

    gate = unique("gate")
    handle = await tasks.trigger("stream-chunks", {"count": 5, "gate": gate, "gate_at": 3})
    tok = handle.public_access_token
    sse, sdk = SseReader(), SdkReader()
    async with (
        connect(server.ws_url) as ws,
        httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http,
        asyncio.timeout(TIMEOUT),
    ):
        await ws.send(stream_subscribe("s", handle.id, "numbers", tok, 0))
        headers = {"Authorization": f"Bearer {tok}"}
        sse_reading = asyncio.ensure_future(sse.read(http, f"/realtime/v1/streams/{handle.id}/numbers", headers))
        sdk_reading = asyncio.ensure_future(sdk.read(handle.id, "numbers"))
        assert [f["index"] for f in await ws.frames_until(lambda f: f.get("index") == 2)] == [0, 1, 2]
        await sse.reached(2)
        await sdk.reached(2)
        monkeypatch.setattr(broker, "read_chunks", counted)
        await checked.wait()  # the three readers checked the healthy stream a few times each: none may end
        assert await ws.sync() == [] and not sse_reading.done() and not sdk_reading.done()

        await lose_storage(server, handle.id)
        frames = await ws.frames_until(of_type("end", "s"))
        assert reset_end(frames) == {"nextIndex": 3, "reason": "error", "code": "stream_reset"}
        await sse_reading
        assert sse.cut and events(sse.lines) == [(0, 0), (1, 1), (2, 2)]
        assert sdk.values == [0, 1, 2] and (await sdk_reading).next_index == 3
    open_gate(gate)


async def ws_read(client: WsClient, sub: str, run_id: str, tok: str, start: int, epoch: str | None) -> list[Frame]:
    """One stream subscription's frames, to its `end` (or `error`)."""
    await client.send({**stream_subscribe(sub, run_id, "numbers", tok, start), **({"epoch": epoch} if epoch else {})})
    return await client.frames_until(lambda f: f.get("id") == sub and f["type"] in ("end", "error"))


async def test_a_restarted_in_memory_bridge_resets_a_resume_with_the_old_epoch_and_continues_one_with_the_new() -> None:
    settings = suite_settings()
    async with serving(settings) as first:
        handle = await tasks.trigger("stream-chunks", {"count": 5})
        await until_final(handle.id)
        run = await first.app_bridge.broker.get_run(handle.id)
        tok = handle.public_access_token
        async with connect(first.ws_url) as client:
            frames = await ws_read(client, "all", handle.id, tok, 0, None)
    old = frames[0]["epoch"]
    assert [f.get("data") for f in frames] == [0, 1, 2, 3, 4, None]
    async with serving(settings) as second:
        async with connect(second.ws_url) as client:
            # The run went with the first process: explicit, not an empty stream.
            assert (await ws_read(client, "gone", handle.id, tok, 5, old))[-1]["code"] == "not_found"
            # The same run and stream stored again, with other chunks (what a lost and rewritten storage holds).
            assert run is not None
            await second.app_bridge.broker.insert_run(run, None, 60)
            await second.app_bridge.broker.append_chunks(handle.id, "numbers", [b'"b%d"' % i for i in range(8)], 0)
            stale = await ws_read(client, "stale", handle.id, tok, 5, old)
            assert reset_end(stale) == {"nextIndex": 5, "reason": "error", "code": "stream_reset"}
            fresh = await ws_read(client, "fresh", handle.id, tok, 0, None)
            new = fresh[0]["epoch"]
            assert new != old and [f.get("data") for f in fresh] == [f"b{i}" for i in range(8)] + [None]
            exact = await ws_read(client, "exact", handle.id, tok, 5, new)
            assert [f.get("data") for f in exact] == ["b5", "b6", "b7", None]
            assert exact[-1] == {"type": "end", "id": "exact", "nextIndex": 8, "reason": "finished"}
        path = f"/realtime/v1/streams/{handle.id}/numbers"
        auth = {"Authorization": f"Bearer {handle.public_access_token}"}
        async with httpx.AsyncClient(base_url=second.url, timeout=TIMEOUT) as http:
            response = await http.get(path, headers={**auth, "Last-Event-ID": f"4-{old}"})
            assert response.status_code == 409 and response.json()["code"] == "stream_reset", response.text
            async with http.stream("GET", path, headers={**auth, "Last-Event-ID": f"4-{new}"}) as ok:
                lines = [line async for line in ok.aiter_lines()]
            assert [line for line in lines if line.startswith("id: ")] == [f"id: {i}-{new}" for i in (5, 6, 7)]
            for bad in ("4-", f"4-{new}-x", "4-" + "e" * 65):
                response = await http.get(path, headers={**auth, "Last-Event-ID": bad})
                assert response.status_code == 400 and "epoch" in response.json()["error"], (bad, response.text)
        # The official client, resuming past what is stored (Last-Event-ID 19): a 409 it does not retry.
        result = await run_script(second, "stream-read.mjs", handle.id, "numbers", handle.public_access_token, "20")
        assert not result.ok and result["error"]["status"] == 409 and result["chunks"] == [], result.explain()


async def read_around(
    bridge: Bridge, run_id: str, key: str, during: Callable[[StreamPage], Awaitable[None]]
) -> tuple[StreamReader, list[Chunk], BaseException | None]:
    """A reader of `key` from 0, its first storage read's answer held until `during(page)` has stored a value
    and that value was heard live (handled by the reader too: the same dispatch); what it read then, till the
    end or its error."""
    heard = asyncio.Event()
    read_chunks = bridge.broker.read_chunks
    reads = 0

    async def held_read(*args: Any) -> StreamPage:
        nonlocal reads
        page = await read_chunks(*args)
        reads += 1
        if reads == 1:
            await during(page)
            await heard.wait()
        return page

    def on_message(channel: str, message: Any) -> None:
        heard.set()

    bridge.broker.read_chunks = held_read  # type: ignore[method-assign]
    channel = stream_channel(run_id, key)
    await bridge.hub.attach(channel, on_message)
    read: list[Chunk] = []
    try:
        async with asyncio.timeout(TIMEOUT), bridge.output_streams.reader(run_id, key) as reader:
            async for chunk in reader.chunks():
                read.append(chunk)
                if chunk.value() == "last":
                    break
    except StreamResetError as reset:
        return reader, read, reset
    finally:
        await bridge.hub.detach(channel, on_message)
        del bridge.broker.read_chunks
    return reader, read, None


@contextlib.asynccontextmanager
async def started(settings: Settings) -> AsyncIterator[Bridge]:
    running = Bridge(settings)
    await running.start()
    try:
        await running.broker.register_tasks(["echo"])
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def bridge(backend_settings: Settings) -> AsyncIterator[Bridge]:
    async with started(backend_settings) as running:
        yield running


@pytest.fixture
async def redis_bridge(redis_server: RedisServer) -> AsyncIterator[Bridge]:
    """The stream replaced under a reader needs its keys deleted: Redis only (in memory, nothing is lost but
    the process)."""
    async with started(suite_settings(redis_url=redis_server.url, key_prefix=unique("rbepochs"))) as running:
        yield running


async def test_a_value_stored_after_a_readers_storage_read_and_heard_live_before_its_answer_is_no_reset(
    bridge: Bridge,
) -> None:
    """The reader's storage read finds no epoch (nothing stored yet); a value is stored next, and its live
    message, carrying the new epoch, is handled before that read's answer (on Redis they come on two
    connections). The epoch learned live is of a later chunk: the reader goes on and reads the value, once."""
    run, _ = await bridge.engine.trigger("echo", None, TriggerOptions())
    key = input_key("stop")

    async def store(page: StreamPage) -> None:
        assert page.epoch is None and page.length == 0
        await bridge.broker.append_input(run.id, key, b'"last"')

    reader, read, reset = await read_around(bridge, run.id, key, store)
    assert reset is None and [(chunk.index, chunk.value()) for chunk in read] == [(0, "last")]
    assert reader.epoch == (await bridge.broker.read_chunks(run.id, key, 0, 0, 0)).epoch is not None


async def test_a_stream_replaced_between_a_readers_storage_read_and_a_live_message_is_a_reset(
    redis_bridge: Bridge,
) -> None:
    """The reader's storage read finds a value under one epoch; then the stream's storage is lost and a value
    stored again (a new epoch), heard live before the read's answer. The reader yields what it read, then
    ends with StreamResetError (the live value is of another storage), at once, not at its next storage check."""
    run, _ = await redis_bridge.engine.trigger("echo", None, TriggerOptions())
    key = input_key("stop")
    await redis_bridge.broker.append_input(run.id, key, b'"first"')

    async def replace_storage(page: StreamPage) -> None:
        assert page.epoch is not None and page.length == 1
        raw = Redis.from_url(redis_bridge.settings.redis_url or "")
        try:
            prefix = redis_bridge.settings.key_prefix
            assert await raw.delete(f"{prefix}:{{{run.id}}}:stream:{key}", f"{prefix}:{{{run.id}}}:stream-epoch:{key}")
        finally:
            await raw.aclose()
        await redis_bridge.broker.append_input(run.id, key, b'"last"')

    started = time.monotonic()
    _, read, reset = await read_around(redis_bridge, run.id, key, replace_storage)
    assert [(chunk.index, chunk.value()) for chunk in read] == [(0, "first")]
    assert isinstance(reset, StreamResetError) and reset.next_index == 1
    assert time.monotonic() - started < output_streams.STORAGE_CHECK_SECONDS
