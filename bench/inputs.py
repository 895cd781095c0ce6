"""Input-stream benchmark: send -> task handler latency p50/p99 at a steady send rate, with Redis.

    .venv/bin/python bench/inputs.py            # 1,000 sends/s for 10 s
    .venv/bin/python bench/inputs.py --quick    # 1,000 sends/s for 3 s

It starts its own `redis-server` on a free loopback port and one bridge process
(`realtime-bridge serve --redis-url ... --tasks bench/inputs.py`: the server and its worker). This
process triggers one run of the `bench-inputs` task, then sends `{"t": <CLOCK_MONOTONIC>}` values
on its "bench" input stream through the SDK (on Redis) at a fixed rate, each send awaited
(acknowledged = stored). The task's `on` handler records `monotonic() - t` per value (the clock is
shared by every process on the machine) and returns them when "stop" arrives. Warm-up (the first
10 %) is excluded. Every loop is bounded in count and in time.
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
from bridge import streams, task  # noqa: E402

TASK_ID = "bench-inputs"
SECRET = os.environ.setdefault("RB_BENCH_SECRET_KEY", "tr_bench_" + os.urandom(24).hex())
SENDERS = 20  # concurrent senders sharing the rate: one awaited send takes longer than 1 ms


@task(id=TASK_ID)
async def bench_inputs(payload: Any) -> list[float]:
    latencies: list[float] = []
    done = asyncio.Event()

    def handler(value: Any) -> None:
        if value == "stop":
            done.set()
        else:
            latencies.append(time.monotonic() - value["t"])

    sub = streams.input("bench").on(handler)
    try:
        async with asyncio.timeout(float(payload.get("timeout", 120))):
            await done.wait()
    finally:
        sub.off()
    return latencies


async def load(redis_url: str, rate: int, seconds: float) -> tuple[list[float], float]:
    from bridge import configure, runs, tasks

    configure(secret_key=SECRET, redis_url=redis_url)
    handle = await tasks.trigger(TASK_ID, {"timeout": seconds + 60})
    async with asyncio.timeout(30):
        async for run in runs.subscribe_to_run(handle.id, stop_on_completion=False):
            if run.status.value == "EXECUTING":
                break
    bench = streams.input("bench")
    total = int(rate * seconds)
    started = time.monotonic()

    async def sender(offset: int) -> None:
        for n in range(offset, total, SENDERS):  # bounded: total / SENDERS sends each
            due = started + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            await bench.send(handle.id, {"t": time.monotonic()})

    async with asyncio.timeout(seconds * 3 + 30):
        await asyncio.gather(*(sender(i) for i in range(SENDERS)))
    achieved = total / (time.monotonic() - started)
    await bench.send(handle.id, "stop")
    async with asyncio.timeout(60):
        async for run in runs.subscribe_to_run(handle.id):
            if run.status.is_final:
                if run.status.value != "COMPLETED":
                    raise RuntimeError(f"bench run ended {run.status.value}: {run.error}")
                latencies: list[float] = run.output
                if len(latencies) != total:
                    raise RuntimeError(f"{total} sent, {len(latencies)} handled")
                return latencies[total // 10 :], achieved
    raise RuntimeError("the run feed ended early")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rate", type=int, default=1000)
    args = parser.parse_args()
    seconds = 3.0 if args.quick else 10.0
    with redis_and_bridge(str(Path(__file__).resolve()), SECRET) as redis_url:
        latencies, achieved = asyncio.run(load(redis_url, args.rate, seconds))
    p50, p99 = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000
    print(f"send -> handler latency at {achieved:.0f} sends/s (target {args.rate}), {len(latencies)} measured:")
    print(f"  p50 {p50:.2f} ms   p99 {p99:.2f} ms   max {max(latencies) * 1000:.2f} ms   (target p99 <= 20 ms)")


if __name__ == "__main__":
    main()
