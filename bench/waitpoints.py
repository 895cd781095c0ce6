"""Wait-token benchmark, with Redis: complete -> task resumed latency, and how late a timeout fires.

    .venv/bin/python bench/waitpoints.py            # 1,000 waiting runs completed at 500/s; 200 timeouts
    .venv/bin/python bench/waitpoints.py --quick    # 300 runs at 300/s; 100 timeouts

It starts its own `redis-server` on a free loopback port and one bridge process
(`realtime-bridge serve --redis-url ... --tasks bench/waitpoints.py`: the server and its worker).
This process (the SDK on Redis, a second process) creates the tokens and triggers one `bench-wait`
run per token; once every run is WAITING it completes the tokens at a fixed rate with
`{"t": <CLOCK_MONOTONIC>}`, and each task reports `monotonic() - t` once `wait.for_token`
returned (the clock is shared by every process on the machine): completion stored + published,
the run back to EXECUTING in the worker. Then tokens with a 1 s timeout: each task reports how
long after the deadline `for_token` returned (wall clock). Every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import percentile, redis_and_bridge  # noqa: E402
from bridge import task, wait  # noqa: E402

TASK_ID = "bench-wait"
SECRET = os.environ.setdefault("RB_BENCH_SECRET_KEY", "tr_bench_" + os.urandom(24).hex())
TIMEOUT_SECONDS = 1.0
CONCURRENCY = 10  # the worker's default slots


@task(id=TASK_ID)
async def bench_wait(payload: dict[str, Any]) -> dict[str, float]:
    result = await wait.for_token(payload["tokenId"])
    resumed_monotonic, resumed_wall = time.monotonic(), time.time()
    if result.ok:
        return {"latency": resumed_monotonic - result.output["t"]}
    token = await wait.retrieve_token(payload["tokenId"])
    assert token.timeout_at is not None
    return {"late": resumed_wall - token.timeout_at.timestamp()}


async def wait_runs(run_ids: list[str], tag: str, condition: Any, timeout: float) -> dict[str, Any]:
    """Follows the tag feed until every run satisfies `condition`; returns the runs by id."""
    from bridge import runs

    wanted, seen = set(run_ids), {}
    async with asyncio.timeout(timeout):
        async for run in runs.subscribe_to_runs_with_tag(tag):
            if run.id in wanted and condition(run):
                seen[run.id] = run
                if len(seen) == len(wanted):
                    return seen
    raise RuntimeError("the tag feed ended early")


async def start_waiting(count: int, tag: str, timeout: float | None) -> tuple[list[str], list[str]]:
    from bridge import tasks

    token_ids = [(await wait.create_token(timeout=timeout)).id for _ in range(count)]
    run_ids = [(await tasks.trigger(TASK_ID, {"tokenId": t}, tags=[tag])).id for t in token_ids]
    return token_ids, run_ids


async def load(redis_url: str, count: int, rate: int, timeouts: int) -> tuple[list[float], float, list[float]]:
    from bridge import configure

    configure(secret_key=SECRET, redis_url=redis_url)
    token_ids, run_ids = await start_waiting(count, "bench-complete", None)
    await wait_runs(run_ids, "bench-complete", lambda r: r.status.value == "WAITING", 120)
    started = time.monotonic()
    for n, token_id in enumerate(token_ids):  # bounded: one completion per token
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await wait.complete_token(token_id, {"t": time.monotonic()})
    achieved = count / (time.monotonic() - started)
    done = await wait_runs(run_ids, "bench-complete", lambda r: r.status.is_final, 120)
    latencies = [run.output["latency"] for run in done.values()]

    _, timeout_runs = await start_waiting(timeouts, "bench-timeout", TIMEOUT_SECONDS)
    timed_out = await wait_runs(timeout_runs, "bench-timeout", lambda r: r.status.is_final, 120)
    lateness = [run.output["late"] for run in timed_out.values()]
    return latencies, achieved, lateness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    count, rate, timeouts = (300, 300, 100) if args.quick else (1000, 500, 200)
    with redis_and_bridge(str(Path(__file__).resolve()), SECRET) as redis_url:
        latencies, achieved, lateness = asyncio.run(load(redis_url, count, rate, timeouts))
    ms = [v * 1000 for v in latencies]
    print(f"complete -> task resumed, {len(ms)} runs completed at {achieved:.0f}/s (target {rate}):")
    print(f"  p50 {percentile(ms, 50):.2f} ms   p99 {percentile(ms, 99):.2f} ms   max {max(ms):.2f} ms")
    late = [v * 1000 for v in lateness]
    print(f"timeout -> task resumed, {len(late)} runs with a {TIMEOUT_SECONDS:g} s timeout, after the deadline:")
    print(
        f"  min {min(late):.2f} ms   p50 {percentile(late, 50):.2f} ms   p99 {percentile(late, 99):.2f} ms"
        f"   max {max(late):.2f} ms   (all due together: they queue for the worker's {CONCURRENCY} slots)"
    )


if __name__ == "__main__":
    main()
