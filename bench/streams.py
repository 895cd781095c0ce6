"""Output-stream benchmark: append rate and append -> client latency, on one bridge process with Redis.

    .venv/bin/python bench/streams.py            # about 80 s
    .venv/bin/python bench/streams.py --quick    # about 40 s

It starts its own `redis-server` on a free loopback port, one bridge server process
(`realtime-bridge serve --redis-url ...`, uvicorn) pinned to core 0, and its load generators in
other processes pinned to core 1, and reports:

(a) a single producer's append rate, in chunks/s, through the SDK (`streams.define(...).pipe` and
    awaited `append` in a task's context, on Redis), next to raw redis-py baselines;
(b) append -> client latency p50/p99 with 500 streams each read by 2 clients at 10 chunks/s per
    stream (10,000 deliveries/s), measured from a timestamp inside each chunk (taken just before
    the producer hands it over to be stored) to the client's receive time on the same machine clock
    (CLOCK_MONOTONIC, shared by every process), warm-up excluded; and the CPU of each process.

The clients use the WebSocket `stream` feed when the server has it, else the official SSE route
(`--transport`). Every loop is bounded in count and in time. See bench/README.md.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import functools
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.wsclient import FramedClient  # noqa: E402

SERVER_CORE = 0
LOAD_CORE = 1
TASK_ID = "bench-stream"
KEY = "ai"
# Set once in the parent; the spawned children inherit it through the environment.
SECRET = os.environ.setdefault("RB_BENCH_SECRET_KEY", "tr_bench_" + os.urandom(24).hex())
TOKEN_TEXT = " token"  # an LLM-token-sized payload next to the timestamp
CONNECT_CONCURRENCY = 50
CONNECT_TIMEOUT_S = 60.0
DRAIN_S = 2.0  # after the last append, time for the last deliveries to arrive
STEP_GAP_S = 2.0  # between load steps, so one step's backlog does not spill into the next
TICK_S = 0.001  # the producer's pacing resolution
STREAM_TIMEOUT_S = 600  # the clients' idle timeout: longer than any run of this script


# ---------------------------------------------------------------------------------------------
# processes, cores, CPU


def pin(pid: int, core: int) -> bool:
    """Pins `pid` (0: this process) to one core, when the OS and the machine allow it."""
    if not hasattr(os, "sched_setaffinity") or core >= (os.cpu_count() or 1):
        return False
    try:
        os.sched_setaffinity(pid, {core})
    except OSError:
        return False
    return True


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (psutil if installed, else /proc/<pid>/stat)."""
    try:
        import psutil  # type: ignore[import-untyped]

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)
    except ImportError:
        pass
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def core_times() -> dict[str, tuple[int, int]]:
    """Per core: (busy, total) jiffies from /proc/stat ({} where there is none)."""
    result: dict[str, tuple[int, int]] = {}
    with contextlib.suppress(OSError), open("/proc/stat") as stat:
        for line in stat:
            name, *values = line.split()
            if name.startswith("cpu") and name != "cpu":
                numbers = [int(v) for v in values]
                idle = numbers[3] + numbers[4]
                result[name] = (sum(numbers) - idle, sum(numbers))
    return result


@dataclass
class CpuSample:
    at: float
    processes: dict[str, float]
    cores: dict[str, tuple[int, int]]


def sample_cpu(pids: dict[str, int]) -> CpuSample:
    processes = {}
    for name, pid in pids.items():
        with contextlib.suppress(OSError):
            processes[name] = cpu_seconds(pid)
    return CpuSample(time.monotonic(), processes, core_times())


def cpu_between(start: CpuSample, end: CpuSample) -> dict[str, float]:
    """Percent of one core used by each process, and busy percent of each core, between two samples."""
    wall = end.at - start.at
    usage = {
        name: 100 * (end.processes[name] - start.processes[name]) / wall
        for name in start.processes
        if name in end.processes
    }
    for core, (busy, total) in end.cores.items():
        busy0, total0 = start.cores.get(core, (0, 0))
        if total > total0:
            usage[core] = 100 * (busy - busy0) / (total - total0)
    ours = sum(usage[name] for name in start.processes if name in usage)
    cores = sum(usage[core] for core in end.cores if core in usage)
    if end.cores:
        usage["other"] = max(0.0, cores - ours)  # everything else on the machine, kernel included
    return usage


def new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def run_async(main: Any) -> Any:
    with asyncio.Runner(loop_factory=new_event_loop) as runner:
        return runner.run(main)


async def start_bridge(redis_url: str) -> Any:
    """The SDK's bridge on Redis, as a producer process (or a worker) has it."""
    from bridge.runtime import state

    bridge = state.configure(secret_key=SECRET, redis_url=redis_url)
    await state.current()
    await bridge.broker.register_tasks([TASK_ID])
    return bridge


async def new_runs(bridge: Any, count: int) -> list[str]:
    from bridge.runtime.engine import TriggerOptions

    ids: list[str] = []
    for _ in range(count):
        run, _created = await bridge.engine.trigger(TASK_ID, None, TriggerOptions(tags=["bench"]))
        ids.append(run.id)
    return ids


# ---------------------------------------------------------------------------------------------
# (a) a single producer's append rate


def timed(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


async def append_rate(redis_url: str, chunks: int, sequential: int) -> dict[str, float]:
    import redis.asyncio as aioredis

    from bridge import streams
    from bridge.runtime.input_streams import RunInputs
    from bridge.runtime.journal import Journal
    from bridge.runtime.output_streams import RunStreams
    from bridge.worker.context import RunScope, entered
    from bridge.worker.durable import DurableRun
    from bridge.worker.registry import RunContext

    async def scope_of(run_id: str) -> RunScope:
        # The scope a worker gives a task, so the SDK's `streams` write to `run_id` from here.
        run = await bridge.engine.retrieve(run_id)
        limits = bridge.settings.limits
        journal = await Journal.open(
            bridge.broker, run_id, run.executions, limits.max_journal_entries, limits.max_payload_bytes
        )
        context = RunContext(run_id=run_id, task_id=TASK_ID, tags=(), batch_id=None)
        run_streams = RunStreams(bridge.engine, run_id)
        durable = DurableRun(bridge, run, journal, run_streams, contextlib.nullcontext, asyncio.Event())
        return RunScope(context, run_streams, RunInputs(bridge.hub, bridge.broker, run_id), durable, bridge)

    bridge = await start_bridge(redis_url)
    results: dict[str, float] = {}

    async def tokens(count: int) -> Any:
        for i in range(count):
            yield {"i": i, "text": TOKEN_TEXT}

    # The SDK as a task uses it: the run's streams in the task context, then `pipe` and `append`.
    for name, count in (("warm-up", chunks // 10), ("sdk_pipe", chunks)):
        run_id = (await new_runs(bridge, 1))[0]
        with entered(await scope_of(run_id)):
            ai = streams.define(KEY)
            await ai.append({"first": True})  # lists the key on the run, outside the timing
            started = time.perf_counter()
            async with asyncio.timeout(120):
                await ai.pipe(tokens(count)).wait_until_complete()
            elapsed = time.perf_counter() - started
            stored = await bridge.broker.stream_length(run_id, KEY)
            if stored != count + 1:
                raise RuntimeError(f"{name}: {stored} chunks stored, expected {count + 1}")
        if name != "warm-up":
            results[name] = timed(count, elapsed)

    run_id = (await new_runs(bridge, 1))[0]
    with entered(await scope_of(run_id)):
        ai = streams.define(KEY)
        await ai.append({"first": True})
        started = time.perf_counter()
        async with asyncio.timeout(60):
            for i in range(sequential):
                await ai.append({"i": i, "text": TOKEN_TEXT})
    results["sdk_append_awaited"] = timed(sequential, time.perf_counter() - started)

    # The broker's Lua append (XADD 0-* + PUBLISH) in batches of 500, with no writer in front.
    run_id = (await new_runs(bridge, 1))[0]
    payload = orjson.dumps({"i": 0, "text": TOKEN_TEXT})
    started = time.perf_counter()
    async with asyncio.timeout(60):
        for _ in range(chunks // 500):
            await bridge.broker.append_chunks(run_id, KEY, [payload] * 500)
    results["broker_append_chunks_500"] = timed(chunks // 500 * 500, time.perf_counter() - started)

    # Raw redis-py: one awaited command per chunk (the round trip), and pipelined XADD.
    client = aioredis.from_url(redis_url, protocol=2)
    try:
        started = time.perf_counter()
        async with asyncio.timeout(60):
            for _ in range(sequential):
                await client.ping()
        results["redis_ping_awaited"] = timed(sequential, time.perf_counter() - started)
        started = time.perf_counter()
        async with asyncio.timeout(60):
            for _ in range(sequential):
                await client.xadd("bench:raw:seq", {"d": payload})
        results["redis_xadd_awaited"] = timed(sequential, time.perf_counter() - started)
        started = time.perf_counter()
        async with asyncio.timeout(60):
            for _ in range(chunks // 500):
                pipe = client.pipeline(transaction=False)
                for _ in range(500):
                    pipe.xadd("bench:raw:pipe", {"d": payload})
                await pipe.execute()
        results["redis_xadd_pipelined_500"] = timed(chunks // 500 * 500, time.perf_counter() - started)
        await client.delete("bench:raw:seq", "bench:raw:pipe")
    finally:
        await client.aclose()
    await bridge.stop()
    return results


def append_rate_process(redis_url: str, chunks: int, sequential: int, conn: Any) -> None:
    pin(0, LOAD_CORE)
    try:
        conn.send(("ok", run_async(append_rate(redis_url, chunks, sequential))))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


# ---------------------------------------------------------------------------------------------
# (b) the clients


class Sink:
    """What one client process received: every chunk's send timestamp and latency, in ns."""

    def __init__(self) -> None:
        self.sent = array.array("q")
        self.latency = array.array("q")
        self.chunks = 0
        self.out_of_order = 0
        self.errors: list[str] = []
        self.ready = 0

    def chunk(self, index: int, expected: int, data: bytes, now: int) -> None:
        sent = orjson.loads(data)["t"]
        self.sent.append(sent)
        self.latency.append(now - sent)
        self.chunks += 1
        if index != expected:
            self.out_of_order += 1


class SseClient(asyncio.Protocol):
    """Reads one SSE stream with as little client CPU as possible: no HTTP library, one parse per read."""

    def __init__(self, sink: Sink, request: bytes, ready: asyncio.Event) -> None:
        self.sink = sink
        self.request = request
        self.ready = ready
        self.buffer = b""
        self.headers_done = False
        self.next_index = 0
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.closed = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self.buffer + data
        if not self.headers_done:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            status = buffer[: buffer.find(b"\r\n")]
            if b" 200 " not in status:
                self.sink.errors.append(status.decode(errors="replace"))
                assert self.transport is not None
                self.transport.close()
                return
            self.headers_done = True
            self.sink.ready += 1
            self.ready.set()
            buffer = buffer[end + 4 :]
        # Each event is one chunk of the chunked body: "<hex>\r\nid: N-<epoch>\ndata: JSON\n\n\r\n".
        position = 0
        while True:
            start = buffer.find(b"id: ", position)
            if start < 0:
                break
            data_at = buffer.find(b"\ndata: ", start)
            end = buffer.find(b"\n\n", data_at) if data_at >= 0 else -1
            if end < 0:
                position = start
                break
            index = int(buffer[start + 4 : data_at].partition(b"-")[0])
            self.sink.chunk(index, self.next_index, buffer[data_at + 7 : end], now)
            self.next_index = index + 1
            position = end + 2
        else:
            position = len(buffer)
        self.buffer = buffer[position:] if position < len(buffer) else b""
        if len(self.buffer) > 1 << 20:
            self.sink.errors.append("SSE parse: buffer overflow")
            self.buffer = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def sse_client(port: int, run_id: str, sink: Sink, clients: list[Any]) -> None:
    request = (
        f"GET /realtime/v1/streams/{run_id}/{KEY} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {SECRET}\r\nAccept: text/event-stream\r\nTimeout-Seconds: {STREAM_TIMEOUT_S}\r\n\r\n"
    ).encode()
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(lambda: SseClient(sink, request, ready), "127.0.0.1", port)
    clients.append(protocol)
    await ready.wait()


class WsClient(FramedClient):
    """One WebSocket connection with one `stream` subscription, as a page has it."""

    def __init__(self, sink: Sink, port: int, run_id: str, token: str, ready: asyncio.Event) -> None:
        subscribe = {
            "type": "subscribe",
            "id": "s",
            "feed": "stream",
            "runId": run_id,
            "key": KEY,
            "startIndex": 0,
            "timeoutInSeconds": STREAM_TIMEOUT_S,
            "token": token,
        }
        super().__init__(port, "/ws", [orjson.dumps(subscribe), orjson.dumps({"type": "ping", "id": "ready"})])
        self.sink = sink
        self.ready = ready
        self.next_index = 0

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.errors:
            self.sink.errors.extend(self.errors)
            self.errors.clear()

    def text(self, payload: bytes, now: int) -> None:
        frame = orjson.loads(payload)
        kind = frame["type"]
        if kind == "chunk":
            sent = frame["data"]["t"]
            sink = self.sink
            sink.sent.append(sent)
            sink.latency.append(now - sent)
            sink.chunks += 1
            if frame["index"] != self.next_index:
                sink.out_of_order += 1
            self.next_index = frame["index"] + 1
        elif kind == "pong":
            self.sink.ready += 1
            self.ready.set()
        elif kind in ("error", "end"):
            self.sink.errors.append(f"{kind}: {frame}")
            self.ready.set()


async def ws_client(port: int, run_id: str, sink: Sink, clients: list[Any]) -> None:
    from bridge.runtime.access import run_access_token

    token = run_access_token(SECRET, run_id)  # what a page holds: read this run (and write its input streams)
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    _transport, protocol = await loop.create_connection(
        lambda: WsClient(sink, port, run_id, token, ready), "127.0.0.1", port
    )
    clients.append(protocol)
    await ready.wait()


async def clients_main(port: int, run_ids: list[str], readers: int, transport: str, conn: Any) -> None:
    sink = Sink()
    clients: list[Any] = []
    connect = ws_client if transport == "ws" else sse_client
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(run_id: str) -> None:
        async with gate:
            await connect(port, run_id, sink, clients)

    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            await asyncio.gather(*(one(run_id) for run_id in run_ids for _ in range(readers)))
    except Exception as exc:
        sink.errors.append(f"connecting: {exc!r}")
    conn.send(("ready", sink.ready, sink.errors[:5]))
    # Wait for "stop" (bounded by the caller's own deadline: it always sends it, or kills us).
    await loop.run_in_executor(None, conn.recv)
    for client in clients:
        with contextlib.suppress(Exception):
            client.transport.close()
    conn.send(
        (
            "done",
            {"chunks": sink.chunks, "out_of_order": sink.out_of_order, "errors": sink.errors[:20]},
            sink.sent.tobytes(),
            sink.latency.tobytes(),
        )
    )


def clients_process(port: int, run_ids: list[str], readers: int, transport: str, conn: Any) -> None:
    pin(0, LOAD_CORE)
    run_async(clients_main(port, run_ids, readers, transport, conn))


# ---------------------------------------------------------------------------------------------
# (b) the producer


@dataclass
class Step:
    rate: float  # chunks/s per stream
    start_ns: int  # monotonic
    measure_ns: int  # warm-up ends here
    end_ns: int  # appends stop here


class PipelinedWriter:
    """A load generator's shortcut (`--producer pipelined`): the broker's own append script, but the
    chunks of every stream due in one tick go to Redis in one pipeline instead of one round trip
    per stream, so the producer costs core 1 less. Same keys, ids and notifications as the SDK."""

    queue: list[tuple[PipelinedWriter, bytes, asyncio.Future[int]]] = []
    flusher: asyncio.Task[None] | None = None
    sha: str | None = None

    def __init__(self, broker: Any, writer: Any) -> None:
        from bridge.backends.base import new_epoch
        from bridge.backends.channels import stream_channel

        self.broker = broker
        self.writer = writer
        conn = broker._conn
        self.keys = [
            conn.keys.run_stream(writer.run_id, writer.key),
            conn.keys.run_stream_failure(writer.run_id, writer.key),
            conn.keys.run_stream_epoch(writer.run_id, writer.key),
        ]
        # At the stream's end (no expected index): this bench's writers share no stream.
        self.head = [
            conn.retention_ms,
            conn.publish_command,
            conn.keys.wire(stream_channel(writer.run_id, writer.key)),
            "",
            new_epoch(),
        ]

    async def enqueue(self, value: object) -> asyncio.Future[int]:
        stored: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        PipelinedWriter.queue.append((self, self.writer.encode(value), stored))
        if PipelinedWriter.flusher is None or PipelinedWriter.flusher.done():
            PipelinedWriter.flusher = asyncio.create_task(PipelinedWriter.flush(self.broker))
        return stored

    @staticmethod
    async def flush(broker: Any) -> None:
        redis = broker._conn.redis
        if PipelinedWriter.sha is None:
            PipelinedWriter.sha = await redis.script_load(broker._conn.script("append_chunks").source)
        sha = PipelinedWriter.sha
        while PipelinedWriter.queue:
            batch, PipelinedWriter.queue = PipelinedWriter.queue, []
            pipe = redis.pipeline(transaction=False)
            for writer, data, _ in batch:
                pipe.evalsha(sha, len(writer.keys), *writer.keys, *writer.head, data)
            try:
                firsts = await pipe.execute()
            except Exception as exc:
                for _, _, stored in batch:
                    stored.set_exception(exc)
                continue
            for (_, _, stored), first in zip(batch, firsts, strict=True):
                stored.set_result(int(first))


async def producer_main(redis_url: str, run_ids: list[str], steps: list[Step], pipelined: bool) -> list[dict[str, Any]]:
    """Appends round-robin over every stream at each step's rate, on a fixed schedule (open loop)."""
    from bridge.runtime.output_streams import RunStreams

    bridge = await start_bridge(redis_url)
    writers = [await RunStreams(bridge.engine, run_id).writer(KEY) for run_id in run_ids]
    if pipelined:
        writers = [PipelinedWriter(bridge.broker, writer) for writer in writers]
    failures: list[str] = []
    results = []
    for step in steps:
        stored_ns: list[int] = []  # append -> stored in Redis, for chunks appended in the window

        def stored(future: asyncio.Future[int], sent: int, timed: bool, into: list[int] = stored_ns) -> None:
            if future.exception() is not None:
                failures.append(repr(future.exception()))
            elif timed:
                into.append(time.monotonic_ns() - sent)

        per_second = step.rate * len(writers)
        delay = time.monotonic_ns() - step.start_ns
        if delay < 0:
            await asyncio.sleep(-delay / 1e9)
        appended = 0
        max_lag_ns = 0
        pending: list[asyncio.Future[int]] = []
        while True:
            now = time.monotonic_ns()
            if now >= step.end_ns:
                break
            due = int((now - step.start_ns) * per_second / 1e9) + 1
            max_lag_ns = max(max_lag_ns, now - (step.start_ns + int(appended * 1e9 / per_second)))
            while appended < due:
                writer = writers[appended % len(writers)]
                sent = time.monotonic_ns()
                future = await writer.enqueue({"t": sent, "text": TOKEN_TEXT})
                future.add_done_callback(functools.partial(stored, sent=sent, timed=sent >= step.measure_ns))
                pending.append(future)
                appended += 1
            # The next chunk's time, but at least a tick away: the loop's timers have 1 ms resolution,
            # and shorter sleeps would spin (what is due by then goes in one burst; ~5 chunks at 5,000/s).
            wake = step.start_ns + int(appended * 1e9 / per_second)
            await asyncio.sleep(max(TICK_S, (wake - time.monotonic_ns()) / 1e9))
        async with asyncio.timeout(30):
            await asyncio.gather(*pending, return_exceptions=True)
        stored_ns.sort()
        result: dict[str, Any] = {"appended": appended, "max_lag_ms": max_lag_ns / 1e6, "failures": failures[:5]}
        if stored_ns:
            result.update(stored_p50_ms=percentile(stored_ns, 0.5), stored_p99_ms=percentile(stored_ns, 0.99))
        results.append(result)
    await bridge.stop()
    return results


def producer_process(redis_url: str, run_ids: list[str], steps: list[Step], pipelined: bool, conn: Any) -> None:
    pin(0, LOAD_CORE)
    try:
        conn.send(("ok", run_async(producer_main(redis_url, run_ids, steps, pipelined))))
    except BaseException as exc:
        conn.send(("error", repr(exc)))
        raise


# ---------------------------------------------------------------------------------------------
# orchestration


def receive(conn: Any, timeout: float, what: str) -> Any:
    if not conn.poll(timeout):
        raise RuntimeError(f"{what}: no answer within {timeout:.0f} s")
    return conn.recv()


def percentile(ordered: list[int], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] / 1e6


def wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not ready within {timeout:.0f} s")
        time.sleep(0.1)  # polling a process we just spawned: no event to await


def server_has_ws_streams() -> bool:
    """Older checkouts, benchmarked for comparison, lack the WebSocket `stream` feed (and the websocket package)."""
    sources = [ROOT / "bridge" / "server" / "websocket.py", ROOT / "bridge" / "server" / "websocket" / "dispatch.py"]
    return any(source.exists() and '"stream"' in source.read_text() for source in sources)


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    redis_version = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    version = next((v[2:] for v in redis_version if v.startswith("v=")), "?")
    return (
        f"{os.cpu_count()} CPUs ({model or platform.machine()}), Linux {platform.release()}, "
        f"Python {platform.python_version()}, Redis {version}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one load step, shorter windows: about 40 s")
    parser.add_argument("--streams", type=int, default=500)
    parser.add_argument("--readers", type=int, default=2, help="clients per stream")
    parser.add_argument(
        "--rates", help="chunks/s per stream, one load step each (default 10; full run: 10,15,20 to find the knee)"
    )
    parser.add_argument("--transport", choices=("auto", "ws", "sse"), default="auto")
    parser.add_argument("--delivery-only", action="store_true", help="skip (a), the single producer's append rate")
    parser.add_argument(
        "--producer",
        choices=("sdk", "pipelined"),
        default="pipelined",
        help="(b)'s producer: one SDK StreamWriter per stream, or one Redis pipeline per tick for all streams",
    )
    parser.add_argument("--profile", metavar="FILE", help="py-spy record the server during the first window")
    parser.add_argument("--json", metavar="FILE", help="also write the figures here")
    args = parser.parse_args()

    from bridge.testing.redis_server import free_port, start_redis_server

    quick = args.quick
    rates = [float(r) for r in (args.rates or ("10" if quick else "10,15,20")).split(",")]
    warmup_s, measure_s = (3.0, 8.0) if quick else (5.0, 20.0)
    step_measure = [measure_s] + [measure_s / 2] * (len(rates) - 1)
    transport = args.transport
    if transport == "auto":
        transport = "ws" if server_has_ws_streams() else "sse"
    ctx = mp.get_context("spawn")
    pin(0, LOAD_CORE)
    report: dict[str, Any] = {"machine": machine(), "transport": transport, "producer": args.producer, "quick": quick}
    print(f"machine: {report['machine']}; clients: {transport}; producer: {args.producer}", flush=True)

    redis = start_redis_server()
    workdir = tempfile.mkdtemp(prefix="rb-bench-")
    server: subprocess.Popen[bytes] | None = None
    server_log: Any = None
    children: list[Any] = []
    try:
        # (a) ------------------------------------------------------------------------------
        if not args.delivery_only:
            pin(redis.process.pid, SERVER_CORE)  # no bridge server yet: Redis and the producer get a core each
            chunks, sequential = (50_000, 2_000) if quick else (200_000, 5_000)
            parent, child = ctx.Pipe()
            producer = ctx.Process(target=append_rate_process, args=(redis.url, chunks, sequential, child), daemon=True)
            producer.start()
            children.append(producer)
            status, append = receive(parent, 150, "append-rate producer")
            if status != "ok":
                raise RuntimeError(f"append-rate producer failed: {append}")
            producer.join(10)
            report["append"] = append
            print("\n(a) single producer append rate, chunks/s (Redis on core 0, producer on core 1)", flush=True)
            for name, value in append.items():
                print(f"  {name:28} {value:>12,.0f}", flush=True)

        # (b) ------------------------------------------------------------------------------
        pin(redis.process.pid, LOAD_CORE)  # core 0 is the bridge server's alone
        port = free_port()
        server_log = open(os.path.join(workdir, "server.log"), "wb")  # noqa: SIM115 (closed in `finally`)
        environment = {**os.environ, "BRIDGE_SECRET_KEY": SECRET, "BRIDGE_REDIS_URL": redis.url}
        # `-m bridge.cli` with this checkout first on the path: the console script would import whichever
        # `bridge` the venv has installed (an editable install of another checkout).
        environment["PYTHONPATH"] = str(ROOT)
        server = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            stdout=server_log,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )
        pinned = pin(server.pid, SERVER_CORE)
        try:
            wait_ready(f"http://127.0.0.1:{port}/readyz", 30)
        except RuntimeError:
            server_log.flush()
            print(Path(workdir, "server.log").read_text(errors="replace")[-3000:], file=sys.stderr)
            raise

        async def make_runs() -> list[str]:
            bridge = await start_bridge(redis.url)
            try:
                return await new_runs(bridge, args.streams)
            finally:
                await bridge.stop()

        run_ids: list[str] = run_async(make_runs())
        clients_parent, clients_child = ctx.Pipe()
        clients = ctx.Process(
            target=clients_process, args=(port, run_ids, args.readers, transport, clients_child), daemon=True
        )
        clients.start()
        children.append(clients)
        _, ready, errors = receive(clients_parent, CONNECT_TIMEOUT_S + 10, "clients connecting")
        expected_clients = args.streams * args.readers
        print(
            f"\n(b) {args.streams} streams x {args.readers} {transport.upper()} clients: {ready}/{expected_clients} "
            f"connected{'; errors: ' + '; '.join(errors) if errors else ''}; server pinned to core 0: {pinned}",
            flush=True,
        )
        if ready < expected_clients:
            raise RuntimeError("not every client connected")

        steps: list[Step] = []
        start = time.monotonic_ns() + 2_000_000_000  # after the producer has started and made its writers
        for rate, window in zip(rates, step_measure, strict=True):
            measure = start + int(warmup_s * 1e9)
            end = measure + int(window * 1e9)
            steps.append(Step(rate, start, measure, end))
            start = end + int(STEP_GAP_S * 1e9)
        producer_parent, producer_child = ctx.Pipe()
        producer = ctx.Process(
            target=producer_process,
            args=(redis.url, run_ids, steps, args.producer == "pipelined", producer_child),
            daemon=True,
        )
        producer.start()
        children.append(producer)
        pids = {"server": server.pid, "redis": redis.process.pid, "producer": producer.pid, "clients": clients.pid}

        profiler: subprocess.Popen[bytes] | None = None
        windows = []
        for number, step in enumerate(steps):
            time.sleep(max(0, step.measure_ns - time.monotonic_ns()) / 1e9)
            if number == 0 and args.profile:
                py_spy = shutil.which("py-spy") or os.environ.get("PY_SPY")
                if py_spy:
                    seconds = str(max(1, int((step.end_ns - step.measure_ns) / 1e9)))
                    record = ["record", "-p", str(server.pid), "-d", seconds, "-r", "250", "--nonblocking"]
                    profiler = subprocess.Popen(
                        [py_spy, *record, "--format", "raw", "-o", args.profile],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                else:
                    print("  --profile: py-spy not found (PATH or $PY_SPY)", flush=True)
            first = sample_cpu(pids)
            time.sleep(max(0, step.end_ns - time.monotonic_ns()) / 1e9)
            windows.append(cpu_between(first, sample_cpu(pids)))
        status, produced = receive(producer_parent, 60, "producer")
        if status != "ok":
            raise RuntimeError(f"producer failed: {produced}")
        time.sleep(DRAIN_S)
        clients_parent.send("stop")
        _, counts, sent_raw, latency_raw = receive(clients_parent, 60, "clients")
        if profiler is not None:
            profiler.wait(timeout=60)

        sent = array.array("q")
        sent.frombytes(sent_raw)
        latency = array.array("q")
        latency.frombytes(latency_raw)
        appended_total = sum(result["appended"] for result in produced)
        report["delivery"] = {
            "clients": expected_clients,
            "appended": appended_total,
            "delivered": counts["chunks"],
            "expected": appended_total * args.readers,
            "out_of_order": counts["out_of_order"],
            "errors": counts["errors"],
        }
        print(
            f"  delivered {counts['chunks']:,} of {appended_total * args.readers:,} expected chunk deliveries, "
            f"{counts['out_of_order']} out of order" + (f"; errors: {counts['errors']}" if counts["errors"] else ""),
            flush=True,
        )
        report["steps"] = []
        for step, cpu, result in zip(steps, windows, produced, strict=True):
            in_window = sorted(lat for t, lat in zip(sent, latency, strict=True) if step.measure_ns <= t < step.end_ns)
            seconds = (step.end_ns - step.measure_ns) / 1e9
            expected = step.rate * args.streams * args.readers * seconds
            figures: dict[str, Any] = {
                "chunks_per_s_per_stream": step.rate,
                "target_deliveries_per_s": step.rate * args.streams * args.readers,
                "deliveries_per_s": len(in_window) / seconds,
                "delivered_fraction": len(in_window) / expected if expected else 0,
                "window_s": seconds,
                "producer_max_lag_ms": result["max_lag_ms"],
                "append_to_stored_p50_ms": result.get("stored_p50_ms"),
                "append_to_stored_p99_ms": result.get("stored_p99_ms"),
                "cpu_percent": cpu,
            }
            if in_window:
                figures.update(
                    p50_ms=percentile(in_window, 0.50),
                    p90_ms=percentile(in_window, 0.90),
                    p99_ms=percentile(in_window, 0.99),
                    p999_ms=percentile(in_window, 0.999),
                    max_ms=in_window[-1] / 1e6,
                )
            report["steps"].append(figures)
            print(
                f"\n  {step.rate:g} chunks/s per stream -> {figures['deliveries_per_s']:,.0f} deliveries/s "
                f"({100 * figures['delivered_fraction']:.1f}% of {figures['target_deliveries_per_s']:,.0f}), "
                f"{seconds:g} s window after {warmup_s:g} s warm-up",
                flush=True,
            )
            if in_window:
                print(
                    "  latency ms: p50 {p50_ms:.2f}  p90 {p90_ms:.2f}  p99 {p99_ms:.2f}  p99.9 {p999_ms:.2f}  "
                    "max {max_ms:.2f}".format(**figures),
                    flush=True,
                )
            print(
                "  CPU % of a core: "
                + "  ".join(f"{name} {value:.0f}" for name, value in cpu.items())
                + f"  (producer max lag {result['max_lag_ms']:.1f} ms)",
                flush=True,
            )
            if "stored_p50_ms" in result:
                print(
                    "  append -> stored in Redis (producer side) ms: "
                    "p50 {stored_p50_ms:.2f}  p99 {stored_p99_ms:.2f}".format(**result),
                    flush=True,
                )
            if cpu.get("other", 0) > 15:
                print(
                    f"  WARNING: {cpu['other']:.0f}% of a core went to other processes on this machine during the "
                    "window: the figures are disturbed; run again on a quiet machine",
                    flush=True,
                )
        first_step = report["steps"][0]
        print("\ntargets (issue 4):", flush=True)
        if "append" in report:
            best_append = report["append"]["sdk_pipe"]
            print(f"  append >= 50,000 chunks/s: {best_append:,.0f} -> {'hit' if best_append >= 50_000 else 'MISS'}")
        if "p50_ms" in first_step:
            print(
                f"  at {first_step['target_deliveries_per_s']:,.0f} deliveries/s: p50 {first_step['p50_ms']:.2f} ms "
                f"(<= 2: {'hit' if first_step['p50_ms'] <= 2 else 'MISS'}), p99 {first_step['p99_ms']:.2f} ms "
                f"(<= 10: {'hit' if first_step['p99_ms'] <= 10 else 'MISS'})",
                flush=True,
            )
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2))
    finally:
        for process in children:
            if process.is_alive():
                process.terminate()
                process.join(5)
        if server is not None and server.poll() is None:
            server.terminate()
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
        if server_log is not None:
            server_log.close()
        redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
