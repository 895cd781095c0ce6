"""Tasks for the worker-crash test, loaded by a real `realtime-bridge worker` process that the test kills."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge import task


@task(id="crash-block-forever")
async def block_forever(payload: Any) -> None:
    await asyncio.Event().wait()


@task(id="crash-quick")
async def quick(payload: Any) -> dict[str, Any]:
    return {"quick": payload}
