"""WebSocket subscriptions to an output stream (`feed: "stream"` in docs/protocol.md).

Each one is a pump task: a `StreamReader` (live listener attached before history is read, chunks
deduplicated by index) whose chunks become `chunk` frames, then one `end` frame. A chunk frame is
the chunk's stored JSON text spliced into a prefix, never decoded and re-encoded.

Flow control: the pump pushes a chunk only while the connection's outbox has room (fewer than
128 frames and under half its byte bound), and otherwise waits for the sender to drain it. While
it waits, its reader's bounded live buffer may overflow; the reader then continues from storage
at its next index. So a slow reader costs bounded memory and loses nothing, and chunk frames are
never coalesced.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from bridge.errors import BridgeError, ValidationError
from bridge.runtime.access import Principal, require_run_read
from bridge.runtime.core import Bridge
from bridge.runtime.output_streams import StreamReader, check_stream_key

log = logging.getLogger(__name__)

MAX_IDLE_SECONDS = 600


@dataclass(frozen=True)
class StreamRequest:
    run_id: str
    key: str
    start_index: int
    idle_timeout: float | None


class StreamOutlet(Protocol):
    """What a pump needs from its connection."""

    bridge: Bridge

    def has_stream_room(self) -> bool: ...

    def stream_room(self) -> Awaitable[None]: ...

    def push_stream_frame(self, subscription_id: str, frame: str, next_index: int) -> None: ...

    def stream_ended(self, subscription_id: str) -> None: ...

    def send(self, body: dict[str, Any]) -> None: ...

    def send_error(self, subscription_id: str | None, error: BridgeError) -> None: ...


async def authorize_stream(bridge: Bridge, frame: dict[str, Any], principal: Principal) -> StreamRequest:
    """Validates a `feed: "stream"` subscribe frame and checks the token may read the run."""
    run_id = frame.get("runId")
    if not isinstance(run_id, str) or not run_id or len(run_id) > 128:
        raise ValidationError("runId must be a non-empty string of at most 128 characters")
    key = frame.get("key")
    if not isinstance(key, str):
        raise ValidationError("key must be a string")
    check_stream_key(key)
    start_index = frame.get("startIndex", 0)
    if not isinstance(start_index, int) or isinstance(start_index, bool) or start_index < 0:
        raise ValidationError("startIndex must be a whole number >= 0")
    idle = frame.get("timeoutInSeconds")
    if idle is not None and (
        not isinstance(idle, (int, float)) or isinstance(idle, bool) or not 1 <= idle <= MAX_IDLE_SECONDS
    ):
        raise ValidationError(f"timeoutInSeconds must be a number from 1 to {MAX_IDLE_SECONDS}")
    run = await bridge.engine.retrieve(run_id)
    require_run_read(principal, run)
    return StreamRequest(run_id, key, start_index, None if idle is None else float(idle))


async def pump_stream(connection: StreamOutlet, subscription_id: str, request: StreamRequest) -> None:
    """Sends the stream as `chunk` frames, then `end`; cancelled by unsubscribe, token expiry or disconnect."""
    bridge = connection.bridge
    prefix = '{"type":"chunk","id":' + orjson.dumps(subscription_id).decode() + ',"index":'
    reader = StreamReader(
        bridge.hub, bridge.broker, request.run_id, request.key, request.start_index, request.idle_timeout
    )
    try:
        async with reader:
            async for chunk in reader.chunks():
                if not connection.has_stream_room():
                    await connection.stream_room()
                connection.push_stream_frame(
                    subscription_id, f'{prefix}{chunk.index},"data":{chunk.data.decode()}}}', chunk.index + 1
                )
    except BridgeError as error:  # the backend failed: the subscription ends; resubscribe from the next index
        connection.stream_ended(subscription_id)
        connection.send_error(subscription_id, error)
        return
    except Exception:
        log.exception("stream subscription %r failed", subscription_id)
        connection.stream_ended(subscription_id)
        connection.send({"type": "error", "id": subscription_id, "code": "internal", "message": "internal error"})
        return
    connection.stream_ended(subscription_id)
    reason = "timeout" if reader.timed_out else "finished"
    connection.send({"type": "end", "id": subscription_id, "nextIndex": reader.next_index, "reason": reason})
