"""What the behavioural tests share: unique names, tokens, gates, awaiting run states, servers with
changed settings. Tests synchronise on run states (the run's own feed), never by polling."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import orjson

from bridge import runs
from bridge.config import Settings
from bridge.models import Run
from bridge.runtime.access import create_public_token
from bridge.worker.executor import Worker
from tests.conftest import SECRET_KEY, RunningServer, serving
from tests.support.tasks import gates

TIMEOUT = 30.0


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def token(*scopes: str, expires: Any = "15m", secret: str = SECRET_KEY) -> str:
    return create_public_token(secret, list(scopes), expires)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def open_gate(gate: str) -> None:
    gates.setdefault(gate, asyncio.Event()).set()


async def until_run(run_id: str, condition: Callable[[Run], bool], timeout: float = TIMEOUT) -> Run:
    """Follows the run with the SDK until `condition` holds."""
    async with asyncio.timeout(timeout):
        async with contextlib.aclosing(runs.subscribe_to_run(run_id, stop_on_completion=False)) as states:
            async for run in states:
                if condition(run):
                    return run
    raise AssertionError(f"run {run_id} ended its feed without reaching the condition")


async def until_final(run_id: str) -> Run:
    return await until_run(run_id, lambda run: run.status.is_final)


def worker_of(server: RunningServer) -> Worker:
    """The worker a test server runs its tasks in."""
    worker: Worker = server.uvicorn.config.app.state.worker
    return worker


@contextlib.asynccontextmanager
async def server_with(settings: Settings, **limits: Any) -> AsyncIterator[RunningServer]:
    """A server with some limits changed, on the backend of `settings`."""
    async with serving(replace(settings, limits=replace(settings.limits, **limits))) as running:
        yield running


@dataclass
class Tally:
    """Counts arrivals (clients that got somewhere); `all` is set once `expected` of them did."""

    expected: int
    count: int = 0
    all: asyncio.Event = field(default_factory=asyncio.Event)

    def add(self) -> None:
        self.count += 1
        if self.count == self.expected:
            self.all.set()


async def sse_events(response: httpx.Response) -> AsyncIterator[tuple[str, Any]]:
    """An SSE stream response's events as they arrive: (the event id, `<index>-<epoch>`; the chunk's value)."""
    event_id = None
    async for line in response.aiter_lines():
        if line.startswith("id: "):
            event_id = line[4:]
        elif line.startswith("data: "):
            assert event_id is not None, line
            yield event_id, orjson.loads(line[6:])
            event_id = None


def event_index(event_id: str) -> int:
    """The chunk index of an SSE event id, `<index>-<epoch>` (or a bare index)."""
    return int(event_id.partition("-")[0])
