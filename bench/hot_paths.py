"""CPU time of two delivery hot paths, in one process, for an A/B between two checkouts:

    .venv/bin/python bench/hot_paths.py [CHECKOUT]    # default: this one; run it alternately for each side

(1) `Connection._send_forever` per frame: frames queued in batches of 100, sent to a socket that takes
    everything at once; (2) `StreamWriter` per awaited append on the memory broker: one chunk per stored
    batch, the worst case for per-batch costs. `time.process_time`, best of 7 rounds, so other processes on
    the machine disturb it less than wall-clock figures. See bench/README.md.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
sys.path.insert(0, str(ROOT))

from starlette.websockets import WebSocketState  # noqa: E402

import bridge  # noqa: E402
from bridge.config import Settings  # noqa: E402
from bridge.models import Run  # noqa: E402
from bridge.runtime.core import Bridge  # noqa: E402
from bridge.runtime.output_streams import RunStreams  # noqa: E402
from bridge.server.topics import TopicRouter  # noqa: E402
from bridge.server.websocket.connection import Connection  # noqa: E402

ROUNDS = 7
FRAME = '{"type":"chunk","id":"s1","index":12345,"data":{"i":12345,"text":" token"}}'


class TakesEverything:
    """The part of a Starlette WebSocket the sender uses."""

    application_state = WebSocketState.CONNECTED

    async def send_text(self, text: str) -> None:
        return None


async def sender_us_per_frame(running: Bridge) -> float:
    connection = Connection(TakesEverything(), running, TopicRouter(running.hub))  # type: ignore[arg-type]
    sender = asyncio.create_task(connection._send_forever())
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for _ in range(300):
            for _ in range(100):
                connection._queue(FRAME, tag="s1")
            await asyncio.sleep(0)  # the sender's one wake-up: nothing it sends to waits
            assert not connection.outbox
        best = min(best, (time.process_time() - started) / 30_000)
    sender.cancel()
    return best * 1e6


async def writer_us_per_append(running: Bridge) -> float:
    run = Run(id="run_hot_paths", task_identifier="hot-paths")
    await running.broker.insert_run(run, None, 60)
    writer = await RunStreams(running.engine, run.id).writer("ai")
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.process_time()
        for i in range(3000):
            await writer.append({"i": i})
        best = min(best, (time.process_time() - started) / 3000)
    return best * 1e6


async def main() -> None:
    running = Bridge(Settings(secret_key="hot-paths-benchmark-key-0123456789"))
    await running.start()
    try:
        print(f"{ROOT}: sender {await sender_us_per_frame(running):.2f} us per frame, ", end="")
        print(f"writer {await writer_us_per_append(running):.2f} us per awaited append")
    finally:
        await running.stop()


if __name__ == "__main__":
    if not Path(bridge.__file__).resolve().is_relative_to(ROOT):
        sys.exit(f"imported {bridge.__file__}, not the checkout {ROOT}")
    asyncio.run(main())
