"""A real worker process is killed with SIGKILL; another worker takes over its runs after a lease.

The run it was executing is marked CRASHED (its side effects are unknown, so it is not re-run);
a run claimed by a worker that died before starting it is executed by the other worker.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bridge.config import Settings
from bridge.models import Run, RunStatus
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.feeds import FeedCursor, FeedSpec
from bridge.testing.redis_server import RedisServer
from bridge.worker.executor import Worker
from bridge.worker.registry import TaskRegistry
from tests.conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parents[1]
LEASE_SECONDS = 1.0
STARTUP_DEADLINE = 60.0  # the subprocess imports everything before it claims anything
_prefixes = itertools.count()

# The in-process worker's versions of tests/support/crash_tasks.py (same ids, same results).
registry = TaskRegistry()


@registry.add_task("crash-block-forever")
async def block_forever(payload: Any) -> None:
    await asyncio.Event().wait()


@registry.add_task("crash-quick")
async def quick(payload: Any) -> dict[str, Any]:
    return {"quick": payload}


class Follower:
    """One run's feed; `until` waits for a state the run reaches."""

    def __init__(self, bridge: Bridge, run_id: str) -> None:
        self._cursor = FeedCursor(bridge.hub, bridge.broker, FeedSpec.for_run(run_id))
        self._pending: list[Run] = []
        self.latest: Run | None = None

    async def open(self) -> None:
        self._pending = await self._cursor.open()

    async def close(self) -> None:
        await self._cursor.close()

    async def until(self, reached: Callable[[Run], bool], timeout: float) -> Run:
        async with asyncio.timeout(timeout):
            while True:
                for run in self._pending:
                    self.latest = run
                    if reached(run):
                        return run
                self._pending = await self._cursor.next_changes(timeout=None)


def start_worker_process(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "BRIDGE_SECRET_KEY": settings.secret_key,
        "BRIDGE_KEY_PREFIX": settings.key_prefix,
        "BRIDGE_LEASE_SECONDS": str(settings.lease_seconds),
    }
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                str(Path(sys.executable).with_name("realtime-bridge")),
                "worker",
                "--tasks",
                str(ROOT / "tests/support/crash_tasks.py"),
                "--redis-url",
                str(settings.redis_url),
                "--concurrency",
                "1",
            ],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


async def test_a_killed_workers_runs_are_crashed_or_run_by_another_worker(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = Settings(
        secret_key=SECRET_KEY,
        redis_url=redis_server.url,
        key_prefix=f"rbcrash{os.getpid()}x{next(_prefixes)}",
        lease_seconds=LEASE_SECONDS,
        default_max_attempts=1,  # a lost execution on the last attempt: CRASHED
        shutdown_grace_seconds=0,
    )
    bridge = Bridge(settings)
    await bridge.start()
    followers: list[Follower] = []
    try:
        await bridge.broker.register_tasks(registry.ids)  # so triggering works before any worker runs
        blocked, _ = await bridge.engine.trigger("crash-block-forever", None, TriggerOptions())
        blocked_feed = Follower(bridge, blocked.id)
        followers.append(blocked_feed)
        await blocked_feed.open()

        log_path = tmp_path / "worker.log"
        process = start_worker_process(settings, log_path)
        try:
            try:
                await blocked_feed.until(lambda run: run.status is RunStatus.EXECUTING, STARTUP_DEADLINE)
            except TimeoutError:
                raise AssertionError(f"the worker never started the run; its log:\n{log_path.read_text()}") from None
            # A second run is claimed by a worker that dies at once, before starting it (the killed
            # process, busy with concurrency 1, cannot claim it itself).
            queued, _ = await bridge.engine.trigger("crash-quick", {"n": 7}, TriggerOptions())
            queued_feed = Follower(bridge, queued.id)
            followers.append(queued_feed)
            await queued_feed.open()
            delivery = await bridge.broker.claim("worker_died_after_claiming", ["crash-quick"], 5)
            assert delivery is not None and delivery.run_id == queued.id
            assert (
                await bridge.broker.claim("worker_probe", ["crash-quick"], 0.1) is None
            )  # claimed: nobody else gets it
        finally:
            process.kill()  # SIGKILL: no shutdown code runs
            await asyncio.to_thread(process.wait, 10)
        killed_at = time.monotonic()

        worker = Worker(bridge, registry)
        await worker.start()
        try:
            deadline = LEASE_SECONDS * 6  # idle for a lease, then found by a heartbeat round (every lease/3)
            crashed = await blocked_feed.until(lambda run: run.status.is_final, deadline)
            assert crashed.status is RunStatus.CRASHED
            assert crashed.error is not None and crashed.error.name == "WorkerLost"
            assert time.monotonic() - killed_at >= LEASE_SECONDS * 0.9  # not before the lease ran out

            completed = await queued_feed.until(lambda run: run.status.is_final, deadline)
            assert completed.status is RunStatus.COMPLETED
            assert completed.output == {"quick": {"n": 7}}
            assert completed.started_at is not None
        finally:
            await worker.stop()
    finally:
        for follower in followers:
            await follower.close()
        await bridge.stop()
