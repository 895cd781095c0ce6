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
