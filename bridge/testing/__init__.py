"""`bridge.testing`: a pytest plugin giving a test a real bridge that serves your tasks, and controls to
drive its runs deterministically. Installed with the package (the `pytest11` entry point
`realtime-bridge`); `-p no:realtime-bridge` turns it off.

    # pyproject.toml
    [tool.pytest.ini_options]
    bridge_tasks = ["myapp.tasks"]          # modules or .py files (relative to the rootdir)

    async def test_approval(bridge_server):
        run = await bridge_server.trigger("review", {"doc": 42})
        await bridge_server.run_reaches(run.id, "WAITING")
        ...

The plugin is loaded by every pytest run in an environment that has the package, so importing it does
nothing but declare the fixtures, the ini options and the marker: the server, uvicorn and your tasks are
imported when a test first asks for `bridge_server`. The fixture is async (pytest-asyncio, any mode).
"""

from __future__ import annotations

import importlib.util
import itertools
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

if TYPE_CHECKING:
    from bridge.testing.redis_server import RedisServer
    from bridge.testing.server import BridgeServer

BACKENDS = ("memory", "redis")
_prefixes = itertools.count(1)
_loaded: set[str] = set()  # a file is executed again by each load: each spec is loaded once per session


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini("bridge_tasks", "modules or .py files whose @task functions bridge_server serves", type="linelist")
    parser.addini("bridge_backend", "bridge_server's backend: memory (default) or redis", default="memory")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "bridge(tasks=[...], backend='memory'|'redis'): bridge_server's tasks and backend for this test",
    )


def _marker_value(request: pytest.FixtureRequest, name: str) -> object:
    marker = request.node.get_closest_marker("bridge")
    return marker.kwargs.get(name) if marker else None


@pytest.fixture
def bridge_tasks(request: pytest.FixtureRequest) -> list[str]:
    """The task modules or files to serve: the `bridge` marker's `tasks`, else the `bridge_tasks` ini option.
    Override this fixture to choose them in code."""
    given = _marker_value(request, "tasks")
    if given is None:
        given = request.config.getini("bridge_tasks")
    specs = [given] if isinstance(given, str) else list(cast("Iterable[str]", given))
    root = request.config.rootpath
    return [str(root / spec) if spec.endswith(".py") and not Path(spec).is_absolute() else spec for spec in specs]


@pytest.fixture(scope="session")
def bridge_redis_server() -> Iterator[RedisServer]:
    """A redis-server of the session's own on a free loopback port (never one already running)."""
    from bridge.testing.redis_server import start_redis_server

    server = start_redis_server()
    yield server
    server.stop()


async def _bridge_server(request: pytest.FixtureRequest, bridge_tasks: list[str]) -> AsyncIterator[BridgeServer]:
    """A bridge serving `bridge_tasks` on a free port for the test, with a worker, a clock of its own and
    the test's holds (`BridgeServer`)."""
    import bridge.steps
    from bridge.testing.clock import ManualClock
    from bridge.testing.holds import Holds
    from bridge.testing.server import BridgeServer, serving, test_settings
    from bridge.worker.registry import default_registry, load_tasks

    backend = _marker_value(request, "backend") or request.config.getini("bridge_backend")
    if backend not in BACKENDS:
        raise pytest.UsageError(f"bridge backend {backend!r}: one of {', '.join(BACKENDS)}")
    for spec in bridge_tasks:
        if spec not in _loaded:
            load_tasks(spec)
            _loaded.add(spec)
    settings = test_settings()
    if backend == "redis":
        redis: RedisServer = request.getfixturevalue("bridge_redis_server")
        # the tests of a session never see each other's keys
        settings = test_settings(redis.url, key_prefix=f"rbtest{next(_prefixes)}")
    holds = Holds()
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr(bridge.steps, "run", holds.wrap(bridge.steps.run))
    clock = ManualClock()
    try:
        async with serving(settings, default_registry, clock) as (url, running):
            yield BridgeServer(url, settings.secret_key, running, clock, holds)
    finally:
        monkeypatch.undo()


# The plugin stays harmless where pytest-asyncio is missing: the fixture then says what it needs.
if importlib.util.find_spec("pytest_asyncio") is not None:
    import pytest_asyncio

    bridge_server = pytest_asyncio.fixture(name="bridge_server")(_bridge_server)
else:

    @pytest.fixture
    def bridge_server() -> None:
        raise pytest.UsageError("bridge_server is an async fixture: pip install pytest-asyncio")
