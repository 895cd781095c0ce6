"""`realtime-bridge serve --workers 2 --redis-url ...`, run for real: two processes answer on one port, share
everything through Redis, stop together on SIGTERM or with their killed parent, and a killed one is replaced
(a bounded number of times).
Which process answered is the pid `/healthz` gives; a WebSocket's process is the one whose
`bridge_connections{protocol="websocket"}` it raised, read on a kept-alive connection to that process."""

from __future__ import annotations

import contextlib
import os
import re
import select
import signal
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from bridge.supervisor import MAX_RESTARTS
from bridge.testing.redis_server import RedisServer
from tests.conftest import SECRET_KEY
from tests.support.helpers import TIMEOUT, bearer, token
from tests.support.processes import ROOT, Running
from tests.support.ws_client import WsClient, connect, on_topic

TASKS = str(ROOT / "tests/support/crash_tasks.py")
ATTEMPTS = 64  # new connections tried to reach each of two processes: all on one is a 2^-63 chance
WEBSOCKET_GAUGE = re.compile(r'^bridge_connections\{protocol="websocket"\} (\S+)$', re.MULTILINE)


def serve_workers(redis: RedisServer, *args: str) -> Running:
    command = ("serve", "--workers", "2", "--port", "0", "--redis-url", redis.url, "--tasks", TASKS, *args)
    return Running(*command, BRIDGE_SECRET_KEY=SECRET_KEY, BRIDGE_KEY_PREFIX=f"rbworkers{os.getpid()}")


def serving_pids(server: Running) -> list[int]:
    """The pids the parent announced as serving, in order."""
    return [int(pid) for pid in re.findall(r"worker \d \(pid (\d+)\) accepts connections", server.output)]


def url_of(server: Running) -> str:
    found = re.search(r"serving on (http://\S+)", server.output)
    assert found, server.output
    return found.group(1)


@contextlib.asynccontextmanager
async def one_client_per_process(url: str) -> AsyncIterator[dict[int, httpx.AsyncClient]]:
    """A client holding one kept-alive connection to each of the two processes, by pid."""
    clients: dict[int, httpx.AsyncClient] = {}
    try:
        for _ in range(ATTEMPTS):
            client = httpx.AsyncClient(base_url=url, timeout=TIMEOUT, limits=httpx.Limits(max_connections=1))
            pid = (await client.get("/healthz")).json()["pid"]
            if pid in clients:
                await client.aclose()
            else:
                clients[pid] = client
            if len(clients) == 2:
                break
        assert len(clients) == 2, f"{ATTEMPTS} connections all reached pid {list(clients)}"
        yield clients
    finally:
        for client in clients.values():
            await client.aclose()


async def websockets_of(http: httpx.AsyncClient) -> float:
    found = WEBSOCKET_GAUGE.search((await http.get("/metrics")).text)
    assert found, "no bridge_connections gauge"
    return float(found.group(1))


async def test_two_processes_serve_one_port_and_share_runs_and_feeds(redis_server: RedisServer) -> None:
    server = serve_workers(redis_server)
    try:
        server.wait_for(r"worker 2 \(pid \d+\) accepts connections")
        pids = serving_pids(server)
        async with one_client_per_process(url_of(server)) as clients, contextlib.AsyncExitStack() as stack:
            assert sorted(clients) == sorted(pids)
            first, second = (clients[pid] for pid in pids)
            # a WebSocket on each process: open them until each process's gauge has one
            on: dict[int, WsClient] = {}
            for _ in range(ATTEMPTS):
                before = {pid: await websockets_of(clients[pid]) for pid in pids}
                ws = await stack.enter_async_context(connect(url_of(server).replace("http://", "ws://") + "/ws"))
                landed = [pid for pid in pids if await websockets_of(clients[pid]) > before[pid]]
                assert len(landed) == 1, landed
                on.setdefault(landed[0], ws)
                if len(on) == 2:
                    break
            assert len(on) == 2, f"{ATTEMPTS} WebSockets all landed on pid {list(on)}"

            triggered = await first.post(
                "/api/v1/tasks/crash-block-forever/trigger", json={"payload": None}, headers=bearer(SECRET_KEY)
            )
            run_id = triggered.json()["id"]
            topic = f"run:{run_id}"
            for watcher in on.values():
                await watcher.subscribe_run(topic, run_id, token(f"read:runs:{run_id}"))
                await watcher.expect(on_topic(topic, lambda run: run["status"] == "EXECUTING"))
            # canceled through the other process: both WebSockets see it live
            canceled = await second.post(f"/api/v2/runs/{run_id}/cancel", headers=bearer(SECRET_KEY))
            assert canceled.status_code == 200, canceled.text
            for watcher in on.values():
                await watcher.expect(on_topic(topic, lambda run: run["status"] == "CANCELED"))
    finally:
        code = server.stop()
    assert code == 0, server.output
    assert server.output.count("Application shutdown complete") == 2, server.output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_a_killed_process_is_replaced_at_most_5_times_a_minute(redis_server: RedisServer) -> None:
    server = serve_workers(redis_server)
    try:
        server.wait_for(r"worker 2 \(pid \d+\) accepts connections")
        victim, survivor = serving_pids(server)
        os.kill(victim, signal.SIGKILL)
        server.wait_for(rf"worker 1 \(pid {victim}\) was killed by signal 9; starting another")
        server.wait_for(r"(worker 1 \(pid \d+\) accepts connections[\s\S]*){2}")
        replacement = serving_pids(server)[-1]
        async with one_client_per_process(url_of(server)) as clients:
            assert sorted(clients) == sorted([survivor, replacement])
        for kill in range(MAX_RESTARTS):  # the 6th death within a minute: the parent gives up
            os.kill(serving_pids(server)[-1], signal.SIGKILL)
            if kill < MAX_RESTARTS - 1:
                server.wait_for(rf"(worker 1 \(pid \d+\) accepts connections[\s\S]*){{{kill + 3}}}")
        server.wait_for("stopping the other workers")
        code = server.process.wait(TIMEOUT)
    finally:
        server.stop()
    assert code == 1, server.output
    assert f"the {MAX_RESTARTS + 1}th death within 60 s; stopping the other workers" in server.output
    with pytest.raises(ProcessLookupError):
        os.kill(survivor, 0)


def test_workers_stop_when_their_parent_is_killed(redis_server: RedisServer) -> None:
    """Orphans would go on serving the port unsupervised, beside the next parent's workers."""
    server = serve_workers(redis_server)
    try:
        server.wait_for(r"worker 2 \(pid \d+\) accepts connections")
        exits = {os.pidfd_open(pid): pid for pid in serving_pids(server)}  # readable once that process ended
        try:
            server.process.kill()
            deadline = time.monotonic() + TIMEOUT
            while exits and (remaining := deadline - time.monotonic()) > 0:
                for ended in select.select(list(exits), [], [], remaining)[0]:
                    del exits[ended]
                    os.close(ended)
            assert not exits, f"workers {list(exits.values())} still ran {TIMEOUT:g} s after their parent died"
        finally:
            for fd, pid in exits.items():  # a failed test leaves no orphan holding the log pipe open
                os.kill(pid, signal.SIGKILL)
                os.close(fd)
    finally:
        server.stop()
    assert server.output.count("Application shutdown complete") == 2, server.output  # gracefully: a SIGTERM
