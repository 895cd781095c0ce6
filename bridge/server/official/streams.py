"""The official output-stream route: Server-Sent Events, version 1, as `useRealtimeStream` reads them.

Each chunk is one event whose id is `<index>-<epoch>`: the chunk's index and the stream's epoch. The
official client takes ids as opaque (it reads a Redis-stream-like timestamp from the part before the
"-", which is the index, as before) and sends the last one back as `Last-Event-ID` when it reconnects,
so a resume is exact, and refused (409 `stream_reset`) when the stream's storage was lost meanwhile.
A plain `Last-Event-ID: N` (`startIndex` N + 1, as the client sends it) resumes without an epoch: only a
stream holding fewer than N + 1 chunks can then be told apart.

The response ends cleanly once the run has finished and every chunk was sent, or after `Timeout-Seconds`
without a new chunk: the official client takes a clean end for the end of the stream. When its reader
stops with an error (the stream failed, was reset, or the backend failed) the response is cut instead
(the connection closes without the body's end), so the client reconnects with its `Last-Event-ID`: a
failed or reset stream then gets 409 (`stream_failed`, `stream_reset`), which the official client
surfaces as its error and does not retry; after a backend failure it resumes where it was.
"""

from __future__ import annotations

import asyncio
import logging

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Send

from bridge.aio import cancel_and_wait
from bridge.errors import BridgeError, StreamFailedError, StreamResetError
from bridge.metrics import Metrics
from bridge.runtime.access import require_run_read
from bridge.runtime.output_streams import (
    MAX_IDLE_SECONDS,
    MAX_STREAM_INDEX,
    StreamReader,
    check_epoch,
    check_stream_key,
)
from bridge.server.http import bridge_of, handles_errors, header_int, parse_bounded_int, principal_of

PING_INTERVAL_SECONDS = 10.0
DEFAULT_IDLE_SECONDS = 60.0
PING = b": ping\n\n"

log = logging.getLogger(__name__)


def _resume_point(request: Request) -> tuple[int | None, str | None]:
    """(the first index wanted, the epoch the client read under) from `Last-Event-ID` (`<index>` or
    `<index>-<epoch>`, the last event the client has); a None index means "from the current tail"."""
    raw = request.headers.get("Last-Event-ID")
    if raw is not None:
        index, dash, epoch = raw.partition("-") if not raw.startswith("-") else (raw, "", "")
        last = parse_bounded_int(index, "Last-Event-ID", -1, MAX_STREAM_INDEX - 1)
        return last + 1, check_epoch(epoch, "Last-Event-ID's epoch (after its '-')") if dash else None
    if request.headers.get("x-trigger-stream-start", "").lower() == "latest":
        return None, None
    return 0, None


def _event_id(index: int, epoch: str | None) -> bytes:
    """`<index>-<epoch>`; the index alone for a stream stored before epochs existed."""
    return b"%d-%s" % (index, epoch.encode()) if epoch else b"%d" % index


def _idle_seconds(request: Request) -> float:
    seconds = header_int(request, "Timeout-Seconds", 1, MAX_IDLE_SECONDS)
    return DEFAULT_IDLE_SECONDS if seconds is None else float(seconds)


class EventStreamResponse(StreamingResponse):
    """A `text/event-stream` response that writes each chunk as its reader yields it: no queue, no task and no
    timeout per chunk. A slow client holds the reader at its `send` (uvicorn waits for the socket to drain),
    and the reader catches up from storage afterwards. One pinger task per response writes a comment after
    `PING_INTERVAL_SECONDS` without an event. When the reader stops with an error the body is not ended:
    uvicorn then closes the connection (logging "ASGI callable returned without completing response"), which
    the client sees as a broken response, not as the end of the stream."""

    def __init__(self, reader: StreamReader, metrics: Metrics, headers: dict[str, str]) -> None:
        super().__init__(iter(()), media_type="text/event-stream", headers=headers)
        self._reader = reader
        self._metrics = metrics
        self._last_sent = 0.0

    async def stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        metrics = self._metrics
        self._last_sent = asyncio.get_running_loop().time()
        pinger = asyncio.create_task(self._ping_forever(send))
        try:
            with metrics.sse_connections.track_inprogress(), metrics.sse_subscriptions.track_inprogress():
                ended = await self._send_events(send)
        finally:
            await cancel_and_wait(pinger)
        if ended:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _send_events(self, send: Send) -> bool:
        """Every event of the reader; False when it stopped with an error (the response is then cut)."""
        reader, metrics = self._reader, self._metrics
        loop = asyncio.get_running_loop()
        async with reader:
            chunks = reader.chunks()
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    return True
                except Exception as failure:  # the reader's, not the client's: `send` is outside
                    _log_failure(reader, failure)
                    return False
                event = b"id: %s\ndata: %s\n\n" % (_event_id(chunk.index, reader.epoch), chunk.data)
                await send({"type": "http.response.body", "body": event, "more_body": True})
                self._last_sent = loop.time()
                metrics.sse_frames.inc()
                metrics.sse_bytes.inc(len(event))

    async def _ping_forever(self, send: Send) -> None:
        loop = asyncio.get_running_loop()
        while True:
            # Sleeps until the interval has passed since the last event; events in between push it back.
            await asyncio.sleep(max(0.0, self._last_sent + PING_INTERVAL_SECONDS - loop.time()))
            if loop.time() - self._last_sent >= PING_INTERVAL_SECONDS:
                await send({"type": "http.response.body", "body": PING, "more_body": True})
                self._last_sent = loop.time()


def _log_failure(reader: StreamReader, failure: Exception) -> None:
    """A failed or reset stream is the stream's end (the client hears of it when it resumes); anything else
    is logged as a warning, with the traceback when it is not a backend's or a connection's failure."""
    if isinstance(failure, (StreamFailedError, StreamResetError)):
        log.info("output stream %s/%s ended: %s", reader.run_id, reader.key, failure)
        return
    expected = isinstance(failure, (BridgeError, ConnectionError, OSError, TimeoutError))
    log.warning(
        "output stream %s/%s: its reader failed, cutting the response: %r",
        reader.run_id,
        reader.key,
        failure,
        exc_info=None if expected else failure,
    )


@handles_errors
async def read_stream(request: Request) -> Response:
    bridge = bridge_of(request)
    principal = principal_of(request)
    run_id = request.path_params["run_id"]
    key = check_stream_key(request.path_params["key"])
    run = await bridge.engine.retrieve(run_id)
    require_run_read(principal, run)
    start, epoch = _resume_point(request)
    idle = _idle_seconds(request)
    if start is None:
        start = await bridge.output_streams.length(run_id, key)
    # Refused before any header is sent, so the client stops resuming: 409 `stream_reset` when what it read
    # is gone, 409 `stream_failed` when nothing more will come.
    await bridge.output_streams.check_resume(run_id, key, start, epoch)
    failure = await bridge.output_streams.failure(run_id, key)
    if failure is not None and start >= failure.next_index:
        raise failure
    headers = {"cache-control": "no-cache", "x-stream-version": "v1", "x-accel-buffering": "no"}
    if request.method == "HEAD":
        # The answer ends with its headers: a body nobody reads would hold a reader, and the connection, for as
        # long as the run streams.
        return Response(media_type="text/event-stream", headers=headers)
    reader = bridge.output_streams.reader(run_id, key, start, idle_timeout=idle, epoch=epoch)
    return EventStreamResponse(reader, bridge.metrics, headers)
