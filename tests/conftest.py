"""Fixtures: both backends, a real uvicorn server on a free port, and clients for it.

Every behavioural test that takes `server` (or `backend_settings`) runs twice: on the memory
backend and on a `redis-server` this session started itself on a free port. Tests marked `cluster`
(a module's `pytestmark`; `cluster(False)` takes one test out) run a third time, on a Redis Cluster
of 3 masters and 3 replicas the session starts the first time one needs it.
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
from hypothesis import settings as hypothesis_settings

from bridge import configure
from bridge.client.transport import Transport
from bridge.config import Settings
from bridge.runtime.core import Bridge
from bridge.server.app import create_app
from bridge.server.websocket.transport import uvicorn_config
from bridge.testing.redis_server import RedisServer, start_redis_server
from tests.support.redis_cluster import RedisClusterNodes, start_redis_cluster
from tests.support.tasks import registry

SECRET_KEY = "tr_dev_test_secret_key_0123456789"
_prefixes = itertools.count()

# The fuzz tests' (tests/test_fuzz_*.py) hypothesis profiles. `ci`, the default, is reproducible
# (derandomized, no example database) and bounded; `pytest --hypothesis-profile=campaign` searches longer,
# at random. deadline=None: an example's time is the server's (two backends, a shared machine).
hypothesis_settings.register_profile(
    "ci", max_examples=300, deadline=None, derandomize=True, database=None, print_blob=True
)
hypothesis_settings.register_profile("campaign", max_examples=2000, deadline=None, print_blob=True)
hypothesis_settings.load_profile("ci")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    yield server
    server.stop()


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for fault tests that break its connections; stopped whatever happens."""
    server = start_redis_server()
    yield server
    server.stop()


def suite_settings(**overrides: Any) -> Settings:
    """The suite's settings: a failed run is not retried and a stopping worker hands its runs back at once,
    unless a test says otherwise."""
    defaults: dict[str, Any] = {"lease_seconds": 1.5, "default_max_attempts": 1, "shutdown_grace_seconds": 0}
    return Settings(secret_key=SECRET_KEY, **{**defaults, **overrides})


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterNodes]:
    cluster = start_redis_cluster()
    yield cluster
    cluster.stop()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend_settings" in metafunc.fixturenames:
        backends = ["memory", "redis"]
        marker = metafunc.definition.get_closest_marker("cluster")
        if marker is not None and marker.args != (False,):  # a test's cluster(False) overrides its module's
            backends.append("redis-cluster")
        metafunc.parametrize("backend_settings", backends, indirect=True)


@pytest.fixture
def backend_settings(request: pytest.FixtureRequest) -> Settings:
    """Settings for one backend; Redis tests get their own key prefix, so they never see each other's keys."""
    settings = suite_settings()
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        settings = replace(settings, redis_url=redis_server.url, key_prefix=f"rbtest{next(_prefixes)}")
    elif request.param == "redis-cluster":
        cluster: RedisClusterNodes = request.getfixturevalue("redis_cluster")
        settings = replace(settings, redis_url=cluster.url, key_prefix=f"rbtest{next(_prefixes)}")
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


async def start_server(
    settings: Settings, *, with_worker: bool = True, send_buffer: int | None = None, **uvicorn_options: Any
) -> tuple[RunningServer, asyncio.Task[None]]:
    """`send_buffer`: the connections' SO_SNDBUF (inherited from the listening socket; fixed, so the kernel
    does not grow it to 4 MiB), for tests whose clients stall: their sends then block after less data;
    `uvicorn_options` go to `uvicorn.Config`."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then (else ~40 ms per keep-alive request)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections wait in the backlog until uvicorn has run the lifespan and serves
    port = sock.getsockname()[1]
    settings = replace(settings, public_url=f"http://127.0.0.1:{port}")  # wait tokens' callback URLs
    app = create_app(settings, registry=registry if with_worker else None)
    # the raw frame path, as `realtime-bridge serve`; `ws="websockets-sansio"` for the ASGI one (mounted)
    config = uvicorn_config(
        app,
        settings.limits.max_frame_bytes,
        lifespan="on",
        timeout_graceful_shutdown=2,
        **{"log_level": "warning", **uvicorn_options},
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
async def serving(
    settings: Settings, *, with_worker: bool = True, send_buffer: int | None = None, **uvicorn_options: Any
) -> AsyncIterator[RunningServer]:
    """A server on `settings` for the duration of the `async with` (see `start_server`)."""
    running, task = await start_server(settings, with_worker=with_worker, send_buffer=send_buffer, **uvicorn_options)
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


@pytest.fixture
async def remote(server: RunningServer) -> AsyncIterator[Transport]:
    """The SDK talking to `server` over the network, as another process would: its own bridge is a fresh,
    empty one, so a call that stayed local would find nothing."""
    configure()
    transport = configure(url=server.url, secret_key=SECRET_KEY)
    try:
        yield transport
    finally:
        await transport.aclose()
        configure()
