"""A reconnect storm: 2,000 WebSocket clients lose their bridge process (SIGTERM, a deploy) while tasks
keep writing, and all come back to the new process on the same port.

The bridge is a real `realtime-bridge serve --redis-url ...` process; the writer is another bridge
with its own worker in this process, on the same Redis. Each client follows one of the runs (its run
feed and its "ticks" stream, on one connection) and reconnects as the hooks do (js-hooks
`socket.ts`): full jitter, random() x min(cap, 250 ms x 2^attempt), the attempt count reset by a
connection that stayed open 5 s; then it resubscribes from its cursor (the stream from its next
index; the run's snapshot is merged by version).

What users rely on: within 10 s of the new process answering /healthz (a deadline, not a speed
target), every client has caught up: each run's final state, and every chunk of its stream once, in
order, then `end`. The clients' backoff cap is 2 s here (the hooks' default `reconnectMaxDelayMs` is
10 s: with it, a client may wait up to 10 s more before it tries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import resource
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bridge.runtime import state
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.testing.redis_server import RedisServer, free_port
from bridge.worker.executor import Worker
from tests.conftest import SECRET_KEY, suite_settings
from tests.support.helpers import Tally, open_gate, token, unique
from tests.support.lean_ws import Frame, HandshakeError, LeanWebSocket, close_all
from tests.support.tasks import registry

ROOT = Path(__file__).resolve().parents[1]
CLIENTS = 2000
RUNS = 20  # 100 clients per run
TICK_SECONDS = 1.0
CATCH_UP_DEADLINE = 10.0
RECONNECT_INITIAL_DELAY = 0.25  # the hooks' reconnectInitialDelayMs
RECONNECT_MAX_DELAY = 2.0  # the hooks' reconnectMaxDelayMs: 10 s by default, see above
STABLE_CONNECTION = 5.0  # the hooks' stableConnectionMs
CONNECTING_AT_ONCE = 200  # the first connections only; the storm itself is not throttled
STARTUP_DEADLINE = 60.0
TIMEOUT = 60.0


def backoff_delay(attempt: int) -> float:
    """js-hooks `Socket.backoffDelay`: full jitter under a doubling cap."""
    return random.random() * min(RECONNECT_MAX_DELAY, RECONNECT_INITIAL_DELAY * 2 ** min(attempt, 30))


@dataclass
class Storm:
    """What every client reports to the test: how many got where, and any frame that broke a rule."""

    reading: Tally  # follows live on the first process (its first update, or 2 chunks)
    done: Tally  # has the run's final state and every chunk, then `end`
    problems: list[str] = field(default_factory=list)
    failed: asyncio.Event = field(default_factory=asyncio.Event)
    retried_subscriptions: int = 0  # `backend_unavailable` answers, each followed by a resubscribe

    async def until(self, tally: Tally, timeout: float) -> None:
        """Until `tally` is complete; fails at once when a client saw a broken rule."""
        waits = {asyncio.ensure_future(tally.all.wait()), asyncio.ensure_future(self.failed.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            assert tally.all.is_set() or self.problems, (
                f"{tally.count} of {tally.expected} within {timeout:g} s: {self}"
            )
        finally:
            for wait in waits:
                wait.cancel()
        assert not self.problems, self.problems[:5]


@dataclass
class StormClient:
    """A page following one run: its run feed (the newest state, by version) or its "ticks" stream (each chunk
    checked to be the next index)."""

    run_id: str
    token: str
    feed: str  # "run" or "stream"
    storm: Storm
    version: int = 0
    run: Frame | None = None
    last_update: int = 0  # the version of the last `update` frame
    next_chunk: int = 0
    ended: bool = False
    connections: int = 0
    retry: int = 0  # the hooks' retryAttempt of the subscription
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    socket: LeanWebSocket | None = None

    def on_frame(self, frame: Frame) -> None:
        try:
            self._take(frame)
        except AssertionError as broken:
            self.storm.problems.append(f"{self.run_id}: {broken}")
            self.storm.failed.set()

    def _take(self, frame: Frame) -> None:
        kind = frame["type"]
        if kind in ("snapshot", "update"):
            # The protocol's version rule: keep the newest state. A snapshot may be older than an update that
            # came before it (the live listener is attached first); updates come in order.
            (run,) = frame["runs"] if kind == "snapshot" else [frame["run"]]
            if kind == "update":
                assert run["version"] > self.last_update, ("update out of order", run["version"], self.last_update)
                if self.last_update == 0:
                    self.storm.reading.add()  # live: the first update
                self.last_update = run["version"]
            if run["version"] > self.version:
                self.version, self.run = run["version"], run
            done = run["status"] == "COMPLETED"
        elif kind == "chunk":
            assert frame["index"] == self.next_chunk and frame["data"] == self.next_chunk, (frame, self.next_chunk)
            self.next_chunk += 1
            if self.next_chunk == 2 and self.connections == 1:
                self.storm.reading.add()
            return
        elif kind == "end":
            assert frame["reason"] == "finished" and frame["nextIndex"] == self.next_chunk, frame
            done = self.ended = True
        elif kind == "error" and frame["code"] == "backend_unavailable":  # as the hooks: again, after a backoff
            self.storm.retried_subscriptions += 1
            asyncio.get_running_loop().call_later(backoff_delay(self.retry), self._resubscribe, self.socket)
            self.retry += 1
            return
        else:
            assert kind == "welcome", frame
            return
        if done and not self.finished.is_set():
            self.finished.set()
            self.storm.done.add()
            assert self.socket is not None
            self.socket.close()

    def _resubscribe(self, socket: LeanWebSocket | None) -> None:
        if socket is self.socket and socket is not None and not socket.closed.done():
            self._subscribe(socket)

    def _subscribe(self, socket: LeanWebSocket) -> None:
        if self.feed == "run":
            socket.send({"type": "subscribe", "id": "run", "feed": "run", "runId": self.run_id, "token": self.token})
        else:  # from its cursor
            socket.send({"type": "subscribe", "id": "ticks", "feed": "stream", "runId": self.run_id, "key": "ticks",
                         "startIndex": self.next_chunk, "token": self.token})  # fmt: skip

    async def follow(self, port: int, connecting: asyncio.Semaphore) -> None:
        """Connects, subscribes, and reconnects after every loss until the run (or its stream) is done."""
        attempt = 0
        while not self.finished.is_set():
            try:
                async with connecting if self.connections == 0 else contextlib.nullcontext():
                    self.socket = await LeanWebSocket.connect(port, self.on_frame)
            except (OSError, HandshakeError):
                await asyncio.sleep(backoff_delay(attempt))
                attempt += 1
                continue
            opened = time.monotonic()
            self.connections += 1
            self.retry = 0
            self._subscribe(self.socket)
            await self.socket.closed
            if time.monotonic() - opened >= STABLE_CONNECTION:
                attempt = 0
            if not self.finished.is_set():
                await asyncio.sleep(backoff_delay(attempt))
                attempt += 1


def allow_open_files(count: int) -> None:
    """Raises the soft RLIMIT_NOFILE to `count` if it is lower (the server process inherits it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        assert hard == resource.RLIM_INFINITY or hard >= count, f"RLIMIT_NOFILE's hard limit {hard} is below {count}"
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def start_bridge_process(settings_env: dict[str, str], port: int, redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "serve", "--port", str(port), "--redis-url", redis_url],
            cwd=ROOT,
            env={**os.environ, **settings_env, "PYTHONPATH": str(ROOT)},
            stdout=output,
            stderr=subprocess.STDOUT,
        )


async def until_healthy(http: httpx.AsyncClient, process: subprocess.Popen[bytes], log: Path) -> float:
    """Returns when the process first answers /healthz (its time), polling: it is another process."""
    async with asyncio.timeout(STARTUP_DEADLINE):
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the bridge process exited; see its log, {log}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/healthz", timeout=1)).status_code == 200:
                    return time.monotonic()
            await asyncio.sleep(0.02)


async def test_2000_clients_catch_up_within_10s_of_a_bridge_restart(
    own_redis_server: RedisServer, tmp_path: Path
) -> None:
    allow_open_files(2 * CLIENTS + 1000)
    redis = own_redis_server
    prefix = unique("storm")
    settings = suite_settings(redis_url=redis.url, key_prefix=prefix)
    writer = Bridge(settings)
    await writer.start()
    state.use(writer)  # the tasks' SDK calls go to the writer
    worker = Worker(writer, registry, concurrency=RUNS)
    await worker.start()
    port = free_port()
    log = tmp_path / "bridge.log"
    bridge_env = {"BRIDGE_SECRET_KEY": SECRET_KEY, "BRIDGE_KEY_PREFIX": prefix}
    processes: list[subprocess.Popen[bytes]] = []
    clients: list[StormClient] = []
    following: list[asyncio.Task[None]] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            processes.append(start_bridge_process(bridge_env, port, redis.url, log))
            await until_healthy(http, processes[-1], log)
            gates = [unique("gate") for _ in range(RUNS)]
            run_ids = []
            for gate in gates:
                payload: dict[str, Any] = {"gate": gate, "interval": TICK_SECONDS}
                run, _ = await writer.engine.trigger("tick-until-gate", payload, TriggerOptions())
                run_ids.append(run.id)
            tokens = {run_id: token(f"read:runs:{run_id}") for run_id in run_ids}
            storm = Storm(Tally(CLIENTS), Tally(CLIENTS))
            for n in range(CLIENTS):
                run_id = run_ids[n % RUNS]
                clients.append(StormClient(run_id, tokens[run_id], "stream" if n % 2 else "run", storm))
            connecting = asyncio.Semaphore(CONNECTING_AT_ONCE)
            following = [asyncio.create_task(client.follow(port, connecting)) for client in clients]
            await storm.until(storm.reading, TIMEOUT)  # everyone follows live, mid-stream
            first_retries = storm.retried_subscriptions

            terminated = time.monotonic()
            processes[-1].send_signal(signal.SIGTERM)  # a deploy: the process closes its connections and exits
            # uvicorn stops gracefully, then re-raises the signal, so the process ends "killed by SIGTERM".
            assert await asyncio.to_thread(processes[-1].wait, 30) in (0, -signal.SIGTERM)
            assert "Application shutdown complete" in await asyncio.to_thread(log.read_text)
            exited = time.monotonic()
            processes.append(start_bridge_process(bridge_env, port, redis.url, log))
            up = await until_healthy(http, processes[-1], log)
            for gate in gates:  # the runs end while the clients come back: their last ticks, live or caught up
                open_gate(gate)
            await storm.until(storm.done, CATCH_UP_DEADLINE)
            caught_up = time.monotonic()
        finals = {run_id: await writer.engine.retrieve(run_id) for run_id in run_ids}
        for client in clients:
            final = finals[client.run_id]
            if client.feed == "run":
                assert client.run is not None and client.run["version"] == final.version
                assert client.run["metadata"] == {"tick": final.output - 1}
            else:
                assert client.ended and client.next_chunk == final.output
            assert client.connections == 2
        print(
            f"\n{CLIENTS} clients: the old process exited {exited - terminated:.2f} s after SIGTERM, the new one "
            f"answered {up - exited:.2f} s later, and all clients caught up {caught_up - up:.2f} s after that; "
            f"subscriptions retried after backend_unavailable: {first_retries} "
            f"at the start, {storm.retried_subscriptions - first_retries} in the storm"
        )
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                await asyncio.to_thread(process.wait, 10)
        for task in following:
            task.cancel()
        await asyncio.gather(*following, return_exceptions=True)
        await close_all([c.socket for c in clients if c.socket is not None])
        await worker.stop()
        await writer.stop()
