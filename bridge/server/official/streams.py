"""The official output-stream route: Server-Sent Events, version 1, as `useRealtimeStream` reads them.

Each chunk is one event whose id is the chunk's index, so the client's `Last-Event-ID` (and
`startIndex` N, sent as `Last-Event-ID: N-1`) resumes exactly. The response ends cleanly once
the run has finished and every chunk was sent, or after `Timeout-Seconds` without a new chunk.
A stream that failed (its writer gave up storing it) ends the response once its last stored chunk
was sent; a request resuming at or past that point is answered 409 `stream_failed`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from bridge.aio import cancel_and_wait
from bridge.errors import BridgeError, StreamFailedError
from bridge.runtime.access import require_run_read
from bridge.runtime.output_streams import MAX_IDLE_SECONDS, MAX_STREAM_INDEX, StreamReader, check_stream_key
from bridge.server.http import bridge_of, handles_errors, header_int, principal_of

PING_INTERVAL_SECONDS = 10.0
DEFAULT_IDLE_SECONDS = 60.0
SEND_QUEUE_EVENTS = 256  # events ready for one slow client; past that its reader pauses and catches up later
PING = b": ping\n\n"

log = logging.getLogger(__name__)


def _start_index(request: Request) -> int | None:
    """From `Last-Event-ID` (the last index the client has); None means "from the current tail"."""
    last = header_int(request, "Last-Event-ID", -1, MAX_STREAM_INDEX - 1)
    if last is not None:
        return last + 1
    if request.headers.get("x-trigger-stream-start", "").lower() == "latest":
        return None
    return 0


def _idle_seconds(request: Request) -> float:
    seconds = header_int(request, "Timeout-Seconds", 1, MAX_IDLE_SECONDS)
    return DEFAULT_IDLE_SECONDS if seconds is None else float(seconds)


async def _events(reader: StreamReader) -> AsyncIterator[bytes]:
    # The pump ends by queueing None, or what stopped its reader: waiting on the queue alone would
    # otherwise ping forever after the reader failed.
    queue: asyncio.Queue[bytes | Exception | None] = asyncio.Queue(SEND_QUEUE_EVENTS)

    async def pump() -> None:
        failure: Exception | None = None
        try:
            async with reader:
                async for chunk in reader.chunks():
                    await queue.put(b"id: %d\ndata: %s\n\n" % (chunk.index, chunk.data))
        except Exception as exc:
            failure = exc
        await queue.put(failure)

    pumping = asyncio.create_task(pump())
    try:
        while True:
            try:
                async with asyncio.timeout(PING_INTERVAL_SECONDS):
                    event = await queue.get()
            except TimeoutError:
                yield PING
                continue
            if isinstance(event, Exception):
                # Headers are sent: end the body, and the client resumes from its Last-Event-ID.
                if isinstance(event, StreamFailedError):
                    log.info("output stream %s/%s ended: %s", reader.run_id, reader.key, event)
                    break
                expected = isinstance(event, (BridgeError, ConnectionError, OSError, TimeoutError))
                log.warning(
                    "output stream %s/%s: its reader failed, ending the response: %r",
                    reader.run_id,
                    reader.key,
                    event,
                    exc_info=None if expected else event,
                )
                break
            if event is None:
                break
            yield event
    finally:
        await cancel_and_wait(pumping)


@handles_errors
async def read_stream(request: Request) -> Response:
    bridge = bridge_of(request)
    principal = principal_of(request)
    run_id = request.path_params["run_id"]
    key = check_stream_key(request.path_params["key"])
    run = await bridge.engine.retrieve(run_id)
    require_run_read(principal, run)
    start = _start_index(request)
    idle = _idle_seconds(request)
    if start is None:
        start = await bridge.output_streams.length(run_id, key)
    failure = await bridge.output_streams.failure(run_id, key)
    if failure is not None and start >= failure.next_index:
        raise failure  # nothing more will come: 409 `stream_failed`, so the client stops resuming
    headers = {"cache-control": "no-cache", "x-stream-version": "v1", "x-accel-buffering": "no"}
    if request.method == "HEAD":
        # The answer ends with its headers: a body nobody reads would hold a reader, and the connection, for as
        # long as the run streams.
        return Response(media_type="text/event-stream", headers=headers)
    reader = bridge.output_streams.reader(run_id, key, start, idle_timeout=idle)
    return StreamingResponse(_events(reader), media_type="text/event-stream", headers=headers)
