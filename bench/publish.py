"""The publisher of `python -m bench`, run by the system's own interpreter (the bridge's venv, or
bench/.venv-peers for Channels and broadcaster) and pinned to the load core by its parent.

    python bench/publish.py '<json: system, redis_url, targets, steps, pad>'

Each step is `[rate per target per s, start_ns, end_ns]` on CLOCK_MONOTONIC. Every 1 ms tick it sends what is
due on every target (an open loop: a slow system does not slow the schedule; what could not be sent by a step's
end is skipped and counted). Prints one JSON line: per step, the messages published and the largest lag.
  bridge:              the SDK on Redis: the run's metadata {t, v, p} set (one update at a time per run)
  handroll, broadcaster: PUBLISH bench:<target> (one pipeline per tick)
  channels:            channel_layer.group_send(<target>, {"type": "bench.message", "text": ...})
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

TICK_S = 0.001
CHANNELS_AT_ONCE = 20  # group_send calls in flight: channels_redis's Redis pool is bounded

Send = Callable[[list[tuple[int, bytes, dict[str, Any]]]], Awaitable[None]]


def message(target: int, version: int, pad: str) -> dict[str, Any]:
    return {"t": time.monotonic_ns(), "v": version, "target": target, "p": pad}


async def sender(system: str, redis_url: str, targets: list[str]) -> tuple[Send, Callable[[], Awaitable[None]]]:
    if system == "bridge":
        from bridge.runtime import state

        bridge = state.configure(secret_key=os.environ["BRIDGE_SECRET_KEY"], redis_url=redis_url)
        await state.current()

        async def update_run(run_id: str, items: list[dict[str, Any]]) -> None:
            for item in items:
                item["t"] = time.monotonic_ns()
                await bridge.engine.update_metadata(run_id, partial(dict.update, **item))

        async def send_bridge(batch: list[tuple[int, bytes, dict[str, Any]]]) -> None:
            per_run: dict[int, list[dict[str, Any]]] = {}
            for target, _raw, item in batch:
                per_run.setdefault(target, []).append(item)
            await asyncio.gather(*(update_run(targets[t], items) for t, items in per_run.items()))

        return send_bridge, bridge.stop
    if system == "channels":
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.channels_app.settings")
        os.environ["BENCH_REDIS_URL"] = redis_url
        import django  # type: ignore[import-untyped,unused-ignore]

        django.setup()
        from channels.layers import get_channel_layer  # type: ignore[import-untyped,import-not-found,unused-ignore]

        layer = get_channel_layer()
        gate = asyncio.Semaphore(CHANNELS_AT_ONCE)

        async def group_send(target: str, raw: bytes) -> None:
            async with gate:
                await layer.group_send(target, {"type": "bench.message", "text": raw.decode()})

        async def send_channels(batch: list[tuple[int, bytes, dict[str, Any]]]) -> None:
            await asyncio.gather(*(group_send(targets[t], raw) for t, raw, _ in batch))

        async def close_channels() -> None:
            await layer.close_pools()

        return send_channels, close_channels
    import redis.asyncio as aioredis

    client = aioredis.from_url(redis_url)

    async def send_redis(batch: list[tuple[int, bytes, dict[str, Any]]]) -> None:
        pipe = client.pipeline(transaction=False)
        for target, raw, _item in batch:
            pipe.publish("bench:" + targets[target], raw)
        await pipe.execute()

    return send_redis, client.aclose


async def main(spec: dict[str, Any]) -> list[dict[str, Any]]:
    targets: list[str] = spec["targets"]
    pad = "x" * int(spec["pad"])
    send, close = await sender(spec["system"], spec["redis_url"], targets)
    versions = [0] * len(targets)
    results = []
    try:
        for rate, start_ns, measure_ns, end_ns in spec["steps"]:
            interval_ns = 1e9 / (rate * len(targets))  # messages round-robin over the targets
            sent = in_window = 0
            max_lag = 0.0
            await asyncio.sleep(max(0.0, (start_ns - time.monotonic_ns()) / 1e9))
            while (now := time.monotonic_ns()) < end_ns:  # bounded: ends at the step's end
                due = int((now - start_ns) / interval_ns) + 1 - sent
                if due > 0:
                    max_lag = max(max_lag, (now - (start_ns + sent * interval_ns)) / 1e6)
                    batch = []
                    for n in range(sent, sent + due):
                        target = n % len(targets)
                        versions[target] += 1
                        item = message(target, versions[target], pad)
                        batch.append((target, json.dumps(item, separators=(",", ":")).encode(), item))
                    await send(batch)
                    # By the stamp each message carries, as the clients count it.
                    in_window += sum(measure_ns <= item["t"] < end_ns for _t, _raw, item in batch)
                    sent += due
                await asyncio.sleep(TICK_S)
            results.append({"sent": sent, "in_window": in_window, "max_lag_ms": max_lag})
    finally:
        await close()
    return results


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))), flush=True)
