"""Tasks the behavioural tests trigger, in their own registry."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge import metadata
from bridge.worker.registry import RunContext, TaskRegistry

registry = TaskRegistry()


@registry.add_task("echo")
async def echo(payload: Any) -> Any:
    return {"echo": payload}


@registry.add_task("progress")
async def progress(payload: dict[str, Any]) -> dict[str, Any]:
    steps = int(payload.get("steps", 3))
    for step in range(1, steps + 1):
        await metadata.set("progress", step / steps)
    return {"steps": steps}


@registry.add_task("fail")
async def fail(payload: Any) -> None:
    raise ValueError(f"failed on purpose: {payload}")


gates: dict[str, asyncio.Event] = {}


@registry.add_task("wait-for-gate")
async def wait_for_gate(payload: dict[str, Any], context: RunContext) -> str:
    """Blocks until the test opens `gates[payload["gate"]]` (or cancels the run)."""
    await metadata.set("waiting", True)
    await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    return context.run_id


@registry.add_task("slow-progress")
async def slow_progress(payload: dict[str, Any]) -> dict[str, Any]:
    """Three metadata steps `delay` seconds apart (default 0.2): simulated work, so watchers see it running.

    With a `gate`, it waits after the first step until the test opens `gates[payload["gate"]]`.
    """
    delay = float(payload.get("delay", 0.2))
    for step in (1, 2, 3):
        if step == 2 and "gate" in payload:
            await gates.setdefault(payload["gate"], asyncio.Event()).wait()
        await asyncio.sleep(delay)
        await metadata.set("progress", step / 3)
    return {"done": payload.get("name", "")}


@registry.add_task("stream-numbers")
async def stream_numbers(payload: dict[str, Any]) -> int:
    """Appends 0..count-1 to the "numbers" stream, in bursts (piped) so appends batch."""
    from bridge import streams

    count = int(payload["count"])

    async def numbers() -> Any:
        for number in range(count):
            yield number

    piped = streams.define("numbers").pipe(numbers())
    await piped.wait_until_complete()
    return count


@registry.add_task("stream-chunks")
async def stream_chunks(payload: dict[str, Any]) -> int:
    """Pipes 0..count-1 to the stream `key` (default "numbers") in bursts of `burst` chunks.

    Between bursts it sleeps `pause` seconds (simulated work, so readers see a live stream). With
    a `gate`, it writes the first `gate_at` chunks (default 0), then waits until the test opens
    `gates[payload["gate"]]`, so readers can connect at a known point of the stream.
    """
    from bridge import streams

    count = int(payload["count"])
    burst = int(payload.get("burst", count or 1))
    pause = float(payload.get("pause", 0))
    gate_at = int(payload.get("gate_at", 0)) if "gate" in payload else -1

    async def numbers() -> Any:
        for number in range(count):
            if number == gate_at:
                await gates.setdefault(payload["gate"], asyncio.Event()).wait()
            if number and number % burst == 0 and pause:
                await asyncio.sleep(pause)
            yield number

    piped = streams.define(payload.get("key", "numbers")).pipe(numbers())
    await piped.wait_until_complete()
    return count


@registry.add_task("await-approval")
async def await_approval(payload: dict[str, Any]) -> Any:
    """Waits (WAITING, slot freed) for one value on "approval" and returns it."""
    from bridge import streams

    return await streams.input("approval").wait(timeout=payload.get("timeout", 30))


@registry.add_task("collect-inputs")
async def collect_inputs(payload: dict[str, Any]) -> list[Any]:
    """Collects every value sent on "items" (handlers and once together) until one is "stop"."""
    from bridge import streams

    items = streams.input("items")
    seen: list[Any] = []
    subscription = items.on(seen.append)
    try:
        while (await items.once(timeout=payload.get("timeout", 30))) != "stop":
            pass
    finally:
        subscription.off()
    return seen
