"""The Python SDK from another process: `configure(url=..., secret_key=...)` against a real server (both
backends), over its HTTP API and WebSocket. (The README's "From your backend" program: tests/test_readme.py.)

The `remote` fixture also gives the SDK a fresh bridge of its own in this process, so a call that went
to a local bridge instead of over the network would find none of the server's tasks or runs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest

from bridge import auth, configure, metadata, runs, streams, tasks, wait
from bridge.client import retries
from bridge.client.transport import Transport
from bridge.config import Settings
from bridge.errors import (
    BackendUnavailableError,
    NotFoundError,
    PayloadTooLargeError,
    RunFinishedError,
    StreamResetError,
    UnauthorizedError,
    ValidationError,
)
from bridge.models import Run, RunStatus
from bridge.runtime.access import AUDIENCE
from bridge.runtime.waitpoints import TokenStatus
from bridge.testing.redis_server import free_port
from tests.conftest import SECRET_KEY, RunningServer, start_server, stop_server
from tests.support.helpers import unique, until_final

TIMEOUT = 20.0


def scopes(token: str) -> list[str]:
    claims: dict[str, Any] = jwt.decode(token, SECRET_KEY, algorithms=["HS256"], audience=AUDIENCE)
    return list(claims["scopes"])


async def collect(feed: AsyncIterator[Any], count: int | None = None) -> list[Any]:
    """What the feed yields until it ends (or `count` items), bounded in time."""
    items: list[Any] = []
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(feed):
        async for item in feed:
            items.append(item)
            if len(items) == count:
                break
    return items


async def test_trigger_follow_and_retrieve_a_run(remote: Transport) -> None:
    tag = unique("remote")
    handle = await tasks.trigger("progress", {"steps": 4}, tags=[tag], metadata={"by": "backend"}, idempotency_key=tag)
    assert not handle.is_cached
    assert scopes(handle.public_access_token) == [f"read:runs:{handle.id}", f"write:inputStreams:{handle.id}"]

    states: list[Run] = await collect(runs.subscribe_to_run(handle.id))
    versions = [run.version for run in states]
    assert versions == sorted(set(versions)), "each state newer than the one before"
    progress = [run.metadata.get("progress", 0) for run in states]
    assert progress == sorted(progress)
    final = states[-1]
    assert final.status is RunStatus.COMPLETED and final.output == {"steps": 4}
    assert final.metadata == {"by": "backend", "progress": 1.0} and final.attempt_number == 1

    retrieved = await runs.retrieve(handle.id)
    assert (retrieved.id, retrieved.status, retrieved.output, retrieved.tags) == (
        handle.id,
        RunStatus.COMPLETED,
        {"steps": 4},
        [tag],
    )
    assert retrieved.metadata == final.metadata and retrieved.finished_at == final.finished_at
    [tagged] = await collect(runs.subscribe_to_runs_with_tag(tag), count=1)
    assert tagged == final

    again = await tasks.trigger("progress", {"steps": 4}, idempotency_key=tag)
    assert (again.id, again.is_cached) == (handle.id, True)
    # The token the SDK signs with the configured key is one the bridge accepts.
    token = auth.create_public_token(scopes={"read": {"runs": [handle.id]}})
    assert scopes(token) == [f"read:runs:{handle.id}"]
    with pytest.raises(RuntimeError, match="inside a running task"):
        await metadata.set("progress", 1)  # the current run's metadata: a task's call, not a backend's


async def test_output_and_input_streams(remote: Transport) -> None:
    written = await tasks.trigger("stream-numbers", {"count": 50})
    assert await collect(streams.read(written.id, "numbers")) == list(range(50))
    assert await collect(streams.read(written.id, "numbers", start_index=45)) == [45, 46, 47, 48, 49]
    with pytest.raises(StreamResetError):  # past what is stored: this reader read a stream that was lost
        await collect(streams.read(written.id, "numbers", start_index=51))

    waiting = await tasks.trigger("await-approval", {})
    await streams.input("approval").send(waiting.id, {"approved": True})
    assert (await until_final(waiting.id)).output == {"approved": True}
    with pytest.raises(RunFinishedError):
        await streams.input("approval").send(waiting.id, {"approved": False})
    with pytest.raises(NotFoundError):
        await streams.input("approval").send("run_" + "0" * 24, 1)
    with pytest.raises(NotFoundError):
        await collect(streams.read("run_" + "0" * 24))


async def test_wait_tokens(server: RunningServer, remote: Transport) -> None:
    key = unique("review")
    token = await wait.create_token(timeout="1m", idempotency_key=key, tags=["remote"])
    assert scopes(token.public_access_token) == [f"write:waitpoints:{token.id}"]
    assert token.url.startswith(f"{server.url}/api/v1/waitpoints/tokens/{token.id}/callback/")
    same = await wait.create_token(timeout="1m", idempotency_key=key)
    assert (same.id, same.is_cached) == (token.id, True)
    waiting = await wait.retrieve_token(token)
    assert (waiting.status, waiting.tags, waiting.idempotency_key) == (TokenStatus.WAITING, ["remote"], key)
    assert timedelta(seconds=50) < waiting.timeout_at - waiting.created_at <= timedelta(minutes=1)

    run = await tasks.trigger("await-token", {"tokenId": token.id})
    await wait.complete_token(token, {"approved": True})
    await wait.complete_token(token, {"approved": False})  # the first completion stays
    assert (await until_final(run.id)).output == {"ok": True, "output": {"approved": True}}
    done = await wait.retrieve_token(token.id)
    assert (done.status, done.output, done.error) == (TokenStatus.COMPLETED, {"approved": True}, None)

    past = await wait.create_token(timeout=datetime.now(UTC) - timedelta(minutes=1))
    timed_out = await wait.retrieve_token(past)
    assert timed_out.status is TokenStatus.TIMED_OUT and timed_out.error is not None
    with pytest.raises(NotFoundError):
        await wait.complete_token("waitpoint_" + "0" * 24, 1)


async def test_batch_trigger_and_cancel(remote: Transport) -> None:
    items: list[dict[str, Any]] = [{"payload": n} for n in range(3)]
    items[1]["options"] = {"tags": ["batched"], "idempotency_key": unique("item")}
    batch = await tasks.batch_trigger("echo", items)
    assert scopes(batch.public_access_token) == [f"read:batch:{batch.batch_id}"]
    assert [handle.is_cached for handle in batch.runs] == [False, False, False]
    finished: dict[str, Run] = {}
    async with asyncio.timeout(TIMEOUT), contextlib.aclosing(runs.subscribe_to_batch(batch.batch_id)) as feed:
        async for run in feed:
            if run.status.is_final:
                finished[run.id] = run
            if len(finished) == 3:
                break
    # Each handle is its item's run, in the items' order.
    assert [finished[handle.id].output for handle in batch.runs] == [{"echo": 0}, {"echo": 1}, {"echo": 2}]
    assert finished[batch.runs[1].id].tags == ["batched"]
    assert {run.batch_id for run in finished.values()} == {batch.batch_id}

    gated = await tasks.trigger("wait-for-gate", {"gate": unique("never")})
    canceled = await runs.cancel(gated.id)
    assert (canceled.id, canceled.status) == (gated.id, RunStatus.CANCELED)
    assert (await runs.retrieve(gated.id)).status is RunStatus.CANCELED
    assert (await runs.cancel(gated.id)).status is RunStatus.CANCELED  # a finished run stays as it is


async def test_a_debounced_burst_over_the_network(remote: Transport) -> None:
    debounce = {"key": unique("remote"), "delay": timedelta(seconds=0.3), "mode": "trailing", "max_delay": 10}
    handles = [await tasks.trigger("echo", n, debounce=debounce) for n in range(3)]
    assert len({handle.id for handle in handles}) == 1
    run = await until_final(handles[0].id)
    assert run.output == {"echo": 2} and run.delay_until is not None
    assert run.delay_until <= run.created_at + 10_000
    with pytest.raises(ValidationError, match=r"^debounce\.key"):  # refused before it is sent
        await tasks.trigger("echo", 1, debounce={"delay": "1s"})


async def test_refusals_are_the_sdks_exceptions(server: RunningServer, remote: Transport) -> None:
    with pytest.raises(NotFoundError, match="Task not found"):
        await tasks.trigger("no-such-task", {})
    with pytest.raises(NotFoundError):
        await runs.retrieve("run_" + "0" * 24)
    with pytest.raises(NotFoundError):
        await collect(runs.subscribe_to_run("run_" + "0" * 24))
    with pytest.raises(ValidationError):
        await tasks.trigger("echo", {"not": {"json"}})
    with pytest.raises(ValidationError):
        await tasks.trigger("echo", {}, tags=[""])
    with pytest.raises(PayloadTooLargeError):
        await tasks.trigger("echo", "x" * server.settings.limits.max_packet_bytes)

    wrong = configure(url=server.url, secret_key="tr_dev_not_the_bridges_key_0123456789")
    try:
        with pytest.raises(UnauthorizedError, match="BRIDGE_SECRET_KEY"):
            await tasks.trigger("echo", {})
        with pytest.raises(UnauthorizedError, match="BRIDGE_SECRET_KEY"):
            await collect(runs.subscribe_to_batch("batch_" + "0" * 24))
    finally:
        await wrong.aclose()


async def test_a_bridge_that_is_down_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    transport = configure(url=url, secret_key=SECRET_KEY)
    try:
        with pytest.raises(BackendUnavailableError, match=f"could not reach the bridge at {url}"):
            await tasks.trigger("echo", {})
        with pytest.raises(BackendUnavailableError, match=f"could not reach the bridge at {url}"):
            await collect(runs.subscribe_to_run("run_" + "0" * 24))
    finally:
        await transport.aclose()
        configure()
    monkeypatch.delenv("BRIDGE_SECRET_KEY", raising=False)
    with pytest.raises(ValidationError, match="secret key"):
        configure(url=url)
    with pytest.raises(ValidationError):
        configure(url=url, secret_key=SECRET_KEY, redis_url="redis://127.0.0.1:6379/0")


async def test_a_subscription_whose_bridge_stops_is_a_clear_error(backend_settings: Settings) -> None:
    running, serving_task = await start_server(backend_settings)
    transport = configure(url=running.url, secret_key=SECRET_KEY)
    stopped = False
    try:
        handle = await tasks.trigger("wait-for-gate", {"gate": unique("never")})
        async with asyncio.timeout(TIMEOUT), contextlib.aclosing(runs.subscribe_to_run(handle.id)) as feed:
            async for run in feed:
                if run.metadata.get("waiting"):
                    await stop_server(running, serving_task)
                    stopped = True
                    with pytest.raises(BackendUnavailableError, match="closed the connection"):
                        await anext(feed)
                    break
    finally:
        await transport.aclose()
        configure()
        if not stopped:
            await stop_server(running, serving_task)
    assert stopped


@contextlib.asynccontextmanager
async def silent_listener() -> AsyncIterator[tuple[str, list[int]]]:
    """A port that accepts connections and never answers; yields its URL and the count of connections."""
    connections = [0]
    done = asyncio.Event()

    async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections[0] += 1
        await done.wait()
        writer.close()

    listener = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}", connections
    finally:
        done.set()
        listener.close()
        await listener.wait_closed()


async def test_each_request_is_bounded_and_only_a_repeatable_one_is_tried_again() -> None:
    async with silent_listener() as (url, connections):
        transport = configure(url=url, secret_key=SECRET_KEY, timeout=0.3)
        try:
            with pytest.raises(BackendUnavailableError):
                await runs.retrieve("run_" + "0" * 24)  # a read: tried again
            assert connections[0] == retries.ATTEMPTS
            with pytest.raises(BackendUnavailableError):
                await wait.create_token()  # sent, and not safe to send again without an idempotency key
            assert connections[0] == retries.ATTEMPTS + 1
            with pytest.raises(BackendUnavailableError):
                await wait.create_token(idempotency_key="k")
            assert connections[0] == 2 * retries.ATTEMPTS + 1
        finally:
            await transport.aclose()
            configure()
