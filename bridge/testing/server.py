"""`BridgeServer`: a bridge serving a test's tasks under real uvicorn on a free port, and the controls a test
drives its runs with. Every control goes through the SDK's own transport for a bridge in this process (or
the runtime call the SDK's task-side functions make), so a page following the run sees the same protocol
traffic as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

import httpx
import uvicorn

from bridge.client.local import LocalTransport
from bridge.client.results import RunHandle
from bridge.config import Settings
from bridge.models import Run, RunStatus
from bridge.runtime.access import ScopeSpec, create_public_token
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.feeds import FeedSpec
from bridge.runtime.output_streams import StreamWriter, check_stream_key
from bridge.server.app import create_app
from bridge.server.websocket.transport import uvicorn_config
from bridge.streams import DEFAULT_KEY
from bridge.testing.clock import ManualClock
from bridge.testing.holds import Hold, Holds
from bridge.worker.registry import TaskRegistry

STOP_SECONDS = 30  # uvicorn's own graceful shutdown is bounded at 2 s; this bounds the lifespan's stop


def test_settings(redis_url: str | None = None, key_prefix: str = "rb") -> Settings:
    """A test bridge's settings, never read from the environment (a `BRIDGE_REDIS_URL` there is someone's
    real Redis): a random test key, and no grace for runs at shutdown."""
    return Settings(
        secret_key=f"tr_test_{secrets.token_hex(16)}",
        redis_url=redis_url,
        key_prefix=key_prefix,
        shutdown_grace_seconds=0,
    )


@contextlib.asynccontextmanager
async def serving(
    settings: Settings, registry: TaskRegistry | None, clock: ManualClock | None = None
) -> AsyncIterator[tuple[str, Bridge]]:
    """The bridge app on a free loopback port for the `async with`: (its URL, its started bridge)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then (else ~40 ms per keep-alive request)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn has run the lifespan and serves
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = replace(settings, public_url=url)  # wait tokens' callback URLs
    app = create_app(settings, registry=registry, clock=clock)
    bridge: Bridge = app.state.bridge
    config = uvicorn_config(app, settings.limits.max_frame_bytes, log_level="warning", timeout_graceful_shutdown=2)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            (await client.get("/healthz")).raise_for_status()
        yield url, bridge
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, STOP_SECONDS)
        sock.close()


@dataclass
class BridgeServer:
    """A running test bridge: `url` for the page (`baseURL`) and HTTP clients, `secret_key` for a backend."""

    url: str
    secret_key: str
    bridge: Bridge
    clock: ManualClock
    holds: Holds

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    @property
    def _sdk(self) -> LocalTransport:
        return LocalTransport(self.bridge)

    async def trigger(self, task_id: str, payload: Any = None, **options: Any) -> RunHandle:
        """As `tasks.trigger`: `options` are its keyword arguments (`tags`, `metadata`, `max_attempts`, ...)."""
        tags = options.pop("tags", None)
        options["tags"] = [tags] if isinstance(tags, str) else list(tags or [])
        return await self._sdk.trigger(task_id, payload, TriggerOptions(**options))

    def public_token(
        self, run_id: str | None = None, *, scopes: ScopeSpec | None = None, expiration_time: str = "1h"
    ) -> str:
        """A public access token for a page: reading `run_id` (and its streams), or the given `scopes`."""
        if (run_id is None) == (scopes is None):
            raise ValueError("give a run_id or scopes")
        return create_public_token(self.secret_key, scopes or {"read": {"runs": [str(run_id)]}}, expiration_time)

    async def run_reaches(self, run_id: str, status: str | RunStatus, timeout: float = 5.0) -> Run:
        """The run once it has `status`, followed on its feed as a page follows it. AssertionError when it
        ends with another status, or is elsewhere after `timeout` seconds."""
        wanted = RunStatus(status)
        last: Run | None = None
        try:
            async with asyncio.timeout(timeout):
                feed = self._sdk.follow(FeedSpec.for_run(run_id), stop_when_finished=False)
                async with contextlib.aclosing(feed) as states:
                    async for last in states:
                        if last.status is wanted:
                            return last
                        if last.status.is_final:
                            break
        except TimeoutError:
            pass
        seen = f"is {last.status.value}" if last else "was not seen"
        error = f" ({last.error.message})" if last and last.error else ""
        raise AssertionError(f"run {run_id} {seen}{error}, not {wanted.value}, after {timeout:g} s")

    async def stream_chunks(
        self, run_id: str, key: str = DEFAULT_KEY, *, count: int | None = None, timeout: float = 5.0
    ) -> list[Any]:
        """The stream's chunks from the first: the first `count`, or all of them once the run finished.
        AssertionError when they are not there within `timeout` seconds."""
        chunks: list[Any] = []
        try:
            async with asyncio.timeout(timeout):
                if count != 0:
                    async with contextlib.aclosing(self._sdk.read(run_id, key, 0, None)) as stream:
                        async for chunk in stream:
                            chunks.append(chunk)
                            if len(chunks) == count:
                                break
        except TimeoutError:
            wanted = f"{count} chunks" if count is not None else "the end of the stream"
            raise AssertionError(
                f"stream {key!r} of run {run_id}: {chunks!r} after {timeout:g} s, not {wanted}"
            ) from None
        return chunks

    # what a page, a backend or the task itself would do
    async def complete_token(self, token_id: str, data: Any = None) -> None:
        await self._sdk.complete_token(token_id, data)

    async def send_input(self, run_id: str, stream_id: str, data: Any) -> None:
        await self._sdk.send_input(run_id, stream_id, data, None)

    async def push_chunk(self, run_id: str, key: str, chunk: Any) -> int:
        """Appends `chunk` to the run's output stream `key` as the task's `append` does; returns its index.
        For a stream the task is not writing meanwhile (a held task's, say)."""
        engine = self.bridge.engine
        await engine.add_stream_key(run_id, check_stream_key(key))
        stored = await engine.broker.stream_length(run_id, key)
        writer = StreamWriter(
            engine.broker, self.bridge.metrics, run_id, key, engine.limits.max_chunk_bytes, stored=stored
        )
        return await writer.append(chunk)

    async def set_metadata(self, run_id: str, **values: Any) -> dict[str, Any]:
        """Sets these metadata keys as the task's `metadata.set` does; returns the run's metadata."""
        return await self.bridge.engine.update_metadata(run_id, lambda metadata: metadata.update(values))

    async def cancel(self, run_id: str) -> Run:
        return await self._sdk.cancel(run_id)

    def hold_at(self, step: str) -> Hold:
        """Runs reaching `steps.run(step, ...)` wait there: `await hold.reached()`, then `hold.release()`
        or `hold.fail("why")`."""
        return self.holds.hold_at(step)

    def advance(self, duration: str | int | float | timedelta) -> None:
        """Skips time on the bridge's clock: wait token timeouts, `wait.for_` and retries' backoff that
        become due fire now."""
        self.clock.advance(duration)
