"""Fixtures: both backends, a real uvicorn server on a free port, and clients for it.

Every behavioural test that takes `server` (or `backend_settings`) runs twice: on the memory
backend and on a `redis-server` this session started itself on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest
import uvicorn

from bridge.config import Settings
from bridge.runtime.core import Bridge
from bridge.server.app import create_app
from bridge.testing.redis_server import RedisServer, start_redis_server
from tests.support.tasks import registry

SECRET_KEY = "tr_dev_test_secret_key_0123456789"
_prefixes = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    yield server
    server.stop()


def suite_settings(**overrides: Any) -> Settings:
    """The suite's settings: a failed run is not retried and a stopping worker hands its runs back at once,
    unless a test says otherwise."""
    defaults: dict[str, Any] = {"lease_seconds": 1.5, "default_max_attempts": 1, "shutdown_grace_seconds": 0}
    return Settings(secret_key=SECRET_KEY, **{**defaults, **overrides})


@pytest.fixture(params=["memory", "redis"])
def backend_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings for one backend; Redis tests get their own key prefix, so they never see each other's keys."""
    settings = suite_settings()
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        settings = replace(settings, redis_url=redis_server.url, key_prefix=f"rbtest{next(_prefixes)}")
    return settings


@dataclass
class RunningServer:
    url: str
    app_bridge: Bridge
    settings: Settings
    uvicorn: uvicorn.Server

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"


async def start_server(settings: Settings, *, with_worker: bool = True) -> tuple[RunningServer, asyncio.Task[None]]:
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then (else ~40 ms per keep-alive request)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn has run the lifespan and serves
    port = sock.getsockname()[1]
    settings = replace(settings, public_url=f"http://127.0.0.1:{port}")  # wait tokens' callback URLs
    app = create_app(settings, registry=registry if with_worker else None)
    config = uvicorn.Config(
        app,
        log_level="warning",
        ws_max_size=settings.limits.max_frame_bytes,
        lifespan="on",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    running = RunningServer(f"http://127.0.0.1:{port}", app.state.bridge, settings, server)
    async with httpx.AsyncClient(base_url=running.url, timeout=30) as client:
        (await client.get("/healthz")).raise_for_status()
    return running, task


async def stop_server(server: RunningServer, task: asyncio.Task[None]) -> None:
    server.uvicorn.should_exit = True
    await asyncio.wait_for(task, 30)


@contextlib.asynccontextmanager
async def serving(settings: Settings, *, with_worker: bool = True) -> AsyncIterator[RunningServer]:
    """A server on `settings` for the duration of the `async with`."""
    running, task = await start_server(settings, with_worker=with_worker)
    try:
        yield running
    finally:
        await stop_server(running, task)


@pytest.fixture
async def server(backend_settings: Settings) -> AsyncIterator[RunningServer]:
    async with serving(backend_settings) as running:
        yield running


@pytest.fixture
async def http(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
        yield client


@pytest.fixture
def backend_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {SECRET_KEY}"}
