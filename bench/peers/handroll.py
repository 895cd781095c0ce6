"""The naive hand-roll a user could write in an afternoon: Redis pub/sub -> per-connection asyncio.Queue ->
send_text. One pattern subscription per process (`bench:*`); a client joins channel X at `/ws/X`.

    BENCH_REDIS_URL=redis://... uvicorn bench.peers.handroll:app
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

QUEUE_LIMIT = 1000  # messages per connection; a fuller queue drops (the naive peer's only bound)
subscribers: dict[str, set[asyncio.Queue[str]]] = {}


async def relay(client: aioredis.Redis) -> None:
    pubsub = client.pubsub()
    await pubsub.psubscribe("bench:*")
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        for queue in subscribers.get(message["channel"][6:], ()):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(message["data"])


async def feed(websocket: WebSocket) -> None:
    await websocket.accept()
    channel = websocket.path_params["channel"]
    queue: asyncio.Queue[str] = asyncio.Queue(QUEUE_LIMIT)
    subscribers.setdefault(channel, set()).add(queue)
    sender = asyncio.create_task(send_forever(websocket, queue))
    try:
        while (await websocket.receive())["type"] != "websocket.disconnect":
            pass
    finally:
        sender.cancel()
        subscribers[channel].discard(queue)


async def send_forever(websocket: WebSocket, queue: asyncio.Queue[str]) -> None:
    while True:
        await websocket.send_text(await queue.get())


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    client = aioredis.from_url(os.environ["BENCH_REDIS_URL"], decode_responses=True)
    task = asyncio.create_task(relay(client))
    yield
    task.cancel()
    await client.aclose()


app = Starlette(routes=[WebSocketRoute("/ws/{channel}", feed)], lifespan=lifespan)
