"""Queues benchmark: what a concurrency gate costs per run, and what a blocked queue costs while it waits.

    .venv/bin/python bench/queues.py    # about 25 s

It starts its own `redis-server` on a free loopback port, and one bridge with a worker (50 slots) in this
process. (a) 1,000 runs of a no-op task, triggered one after the other, until every one is final: without a
queue, through a queue with a limit of 10, with 100 concurrency keys, and with a limit of 1 and priorities;
wall time, this process's CPU time (bridge, worker and triggering together) per run, and the Lua script calls
Redis counted (INFO commandstats). (b) 200 runs of a queue with a limit of 1 whose first run never ends: the
Redis commands and this process's CPU over 3 s while 199 wait. Every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bridge.config import Settings  # noqa: E402 - after the path
from bridge.models import Run  # noqa: E402
from bridge.runtime.core import Bridge  # noqa: E402
from bridge.runtime.engine import TriggerOptions  # noqa: E402
from bridge.testing.redis_server import start_redis_server  # noqa: E402
from bridge.worker.executor import Worker  # noqa: E402
from bridge.worker.registry import TaskRegistry  # noqa: E402

RUNS = 1000
BLOCKED_RUNS = 200
BLOCKED_WINDOW_S = 3.0
FINAL_TIMEOUT_S = 120.0
COUNTED = ("cmdstat_evalsha", "cmdstat_xadd", "cmdstat_xreadgroup")

registry = TaskRegistry()
release_blocked = asyncio.Event()


@registry.add_task("bench-noop")
async def noop(payload: Any) -> Any:
    return payload


@registry.add_task("bench-hold")
async def hold(payload: Any) -> None:
    await release_blocked.wait()


async def counts(redis: aioredis.Redis) -> dict[str, int]:
    stats = await redis.info("commandstats")
    return {name: int(stats.get(name, {}).get("calls", 0)) for name in COUNTED}


async def through(bridge: Bridge, options_of: Callable[[int], TriggerOptions]) -> tuple[float, float]:
    """(wall s, process CPU s) for RUNS runs triggered and ended."""
    finished: set[str] = set()
    done = asyncio.Event()

    async def on_final(run: Run) -> None:
        finished.add(run.id)
        if len(finished) == RUNS:
            done.set()

    bridge.engine.final_listeners.append(on_final)
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        for n in range(RUNS):
            await bridge.engine.trigger("bench-noop", n, options_of(n))
        await asyncio.wait_for(done.wait(), FINAL_TIMEOUT_S)
    finally:
        bridge.engine.final_listeners.remove(on_final)
    return time.perf_counter() - wall, time.process_time() - cpu


async def main() -> None:
    server = start_redis_server()
    try:
        settings = Settings(secret_key="b" * 40, redis_url=server.url, key_prefix="qbench", worker_concurrency=50)
        bridge = Bridge(settings)
        await bridge.start()
        worker = Worker(bridge, registry)
        await worker.start()
        redis = aioredis.from_url(server.url)
        try:
            await through(bridge, lambda n: TriggerOptions())  # warm-up
            cases: list[tuple[str, Callable[[int], TriggerOptions]]] = [
                ("no queue", lambda n: TriggerOptions()),
                ("limit 10", lambda n: TriggerOptions(queue={"name": "q10", "concurrency_limit": 10})),
                (
                    "limit 10, 100 keys",
                    lambda n: TriggerOptions(
                        queue={"name": "qk", "concurrency_limit": 10}, concurrency_key=f"k{n % 100}"
                    ),
                ),
                (
                    "limit 1, priorities",
                    lambda n: TriggerOptions(queue={"name": "q1", "concurrency_limit": 1}, priority=n % 7),
                ),
            ]
            for label, options_of in cases:
                before = await counts(redis)
                wall, cpu = await through(bridge, options_of)
                after = await counts(redis)
                scripts = after["cmdstat_evalsha"] - before["cmdstat_evalsha"]
                print(
                    f"(a) {label:20s} {RUNS} runs: wall {wall:.2f} s, CPU {cpu / RUNS * 1000:.2f} ms/run, "
                    f"{scripts / RUNS:.1f} scripts/run"
                )
            for n in range(BLOCKED_RUNS):
                await bridge.engine.trigger(
                    "bench-hold", n, TriggerOptions(queue={"name": "qb", "concurrency_limit": 1})
                )
            before, cpu = await counts(redis), time.process_time()
            await asyncio.sleep(BLOCKED_WINDOW_S)  # the window measured, not a synchronisation
            after = await counts(redis)
            delta = {name.removeprefix("cmdstat_"): after[name] - before[name] for name in COUNTED}
            print(
                f"(b) 1 holding, {BLOCKED_RUNS - 1} waiting, {BLOCKED_WINDOW_S:.0f} s: Redis calls {delta}, "
                f"CPU {time.process_time() - cpu:.3f} s (the worker's own claim loop: one claim script and one "
                "blocking read a second)"
            )
        finally:
            release_blocked.set()
            await worker.stop(grace=5)
            await bridge.stop()
            await redis.aclose()
    finally:
        server.stop()


if __name__ == "__main__":
    asyncio.run(main())
