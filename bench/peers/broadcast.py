"""encode/broadcaster on Redis pub/sub behind Starlette, as its README shows it: one subscription per
connection (`/ws/X` follows channel `bench:X`).

    BENCH_REDIS_URL=redis://... uvicorn bench.peers.broadcast:app   # in bench/.venv-peers
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

from broadcaster import Broadcast  # type: ignore[import-not-found]
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

broadcast = Broadcast(os.environ.get("BENCH_REDIS_URL", "memory://"))


async def feed(websocket: WebSocket) -> None:
    await websocket.accept()
    channel = "bench:" + websocket.path_params["channel"]
    async with broadcast.subscribe(channel) as subscriber:
        sender = asyncio.create_task(send_forever(websocket, subscriber))
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            sender.cancel()


async def send_forever(websocket: WebSocket, subscriber: object) -> None:
    async for event in subscriber:  # type: ignore[attr-defined]
        await websocket.send_text(event.message)


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    await broadcast.connect()
    yield
    await broadcast.disconnect()


app = Starlette(routes=[WebSocketRoute("/ws/{channel}", feed)], lifespan=lifespan)
