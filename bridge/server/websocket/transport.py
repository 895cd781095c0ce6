"""The raw frame path: prepared WebSocket frames written straight to a connection's transport.

Server-to-client frames are not masked, so a frame encoded once (`text_frame`) is the same bytes for
every subscriber. `FramesProtocol` is uvicorn's sans-I/O WebSocket protocol plus one ASGI scope
extension, `realtime-bridge.frames`: a `Frames` object whose `write` puts such bytes on the transport
synchronously, without an ASGI send, a task wake-up or a per-message framing step. It is offered only
when no extension (per-message-deflate) was negotiated, since a prepared frame cannot be compressed
per connection. `realtime-bridge serve` and the testing kit use it (`uvicorn_config`); under another
server (the bridge mounted in a user's app) the extension is absent and the connection sends through
ASGI instead.

Slow readers: the transport pauses its protocol when its write buffer passes WRITE_HIGH_WATER and
resumes it under WRITE_LOW_WATER; `Frames` forwards both to its listener (the connection), which
queues instead of writing while paused. Once it closes one (4008), the close frame queues behind the
unsent frames, and `Frames.abort_after` cuts the connection if it is still open a grace later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol, cast

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

FRAMES_EXTENSION = "realtime-bridge.frames"
WRITE_HIGH_WATER = 64 * 1024  # a connection's transport buffer over this: frames wait in its outbox...
WRITE_LOW_WATER = 16 * 1024  # ...until the buffer is drained to this (asyncio's own defaults, made explicit)
_TEXT = 0x81  # FIN + opcode 1 (text)


def text_frame(payload: bytes) -> bytes:
    """A complete, unmasked, unfragmented WebSocket text frame carrying `payload` (UTF-8)."""
    length = len(payload)
    if length < 126:
        return bytes((_TEXT, length)) + payload
    if length < 65536:
        return bytes((_TEXT, 126)) + length.to_bytes(2, "big") + payload
    return bytes((_TEXT, 127)) + length.to_bytes(8, "big") + payload


def _header_size(frame: bytes) -> int:
    marker = frame[1]
    return 2 if marker < 126 else 4 if marker == 126 else 10


def frame_payload(frame: bytes) -> bytes:
    """The payload of a frame `text_frame` built."""
    return frame[_header_size(frame) :]


def payload_size(frame: bytes) -> int:
    """The payload's size in a frame `text_frame` built (what the sent-bytes metric counts)."""
    return len(frame) - _header_size(frame)


class FramesListener(Protocol):
    def writing_paused(self) -> None: ...

    def writing_resumed(self) -> None: ...


class Frames:
    """What a connection served by `FramesProtocol` finds in `scope["extensions"][FRAMES_EXTENSION]`."""

    __slots__ = ("_protocol", "_transport", "listener", "paused")

    def __init__(self, protocol: FramesProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport
        self.paused = False  # the transport's buffer is over its high water and not yet down to its low
        self.listener: FramesListener | None = None

    @property
    def writable(self) -> bool:
        """A frame written now goes out without waiting: open, and the buffer under its high water."""
        protocol = self._protocol
        return not (self.paused or protocol.close_sent or protocol.disconnected or self._transport.is_closing())

    def write(self, frame: bytes) -> None:
        """Writes one prepared frame (from `text_frame`); only while `writable`."""
        self._transport.write(frame)

    def buffered(self) -> int:
        return self._transport.get_write_buffer_size()

    def abort_after(self, seconds: float) -> None:
        """Cuts the connection (`transport.abort`) unless it is lost within `seconds`: uvicorn closes it with
        `transport.close`, which waits for the buffered frames to be taken, so a reader that stopped would
        otherwise keep its socket and the server's buffered bytes for as long as it likes. Replaces
        uvicorn's close timer (10 s, then `close`), which the peer's close reply and the loss cancel."""
        protocol = self._protocol
        if protocol.disconnected:
            return
        if protocol.close_timer is not None:
            protocol.close_timer.cancel()
        protocol.close_timer = protocol.loop.call_later(seconds, self._transport.abort)

    def _paused(self) -> None:
        self.paused = True
        if self.listener is not None:
            self.listener.writing_paused()

    def _resumed(self) -> None:
        self.paused = False
        if self.listener is not None:
            self.listener.writing_resumed()


class FramesProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, offering `Frames` to the app."""

    raw_frames: Frames | None = None  # not `frames`: uvicorn's protocol has one (a message's received parts)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.set_write_buffer_limits(WRITE_HIGH_WATER, WRITE_LOW_WATER)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)  # schedules the app's task: the scope is read when it runs, after this
        if self.handshake_initiated and not self.close_sent and not self.conn.extensions:
            self.raw_frames = Frames(self)
            cast(dict[str, Any], self.scope["extensions"])[FRAMES_EXTENSION] = self.raw_frames

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.raw_frames is not None:
            self.raw_frames._paused()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self.raw_frames is not None:
            self.raw_frames._resumed()

    async def send(self, message: Any) -> None:
        if message["type"] == "websocket.close" and self.handshake_complete:
            # uvicorn waits for a paused transport to drain before any send: the close frame of a reader that
            # stopped would never go. It queues behind the unsent frames instead (`Frames.abort_after` bounds it).
            self.writable.set()
        await super().send(message)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if self.raw_frames is not None:
            self.raw_frames._resumed()  # asyncio never resumes a transport lost while paused: wake what waits


# `uvicorn.Config` options under which WebSocket connections get the raw frame path.
UVICORN_OPTIONS: dict[str, Callable[..., Any] | bool] = {"ws": FramesProtocol, "ws_per_message_deflate": False}


def uvicorn_config(app: Any, max_frame_bytes: int, **options: Any) -> uvicorn.Config:
    """The `uvicorn.Config` of every uvicorn the bridge starts itself (`realtime-bridge serve`, the testing
    kit, the tests), so they all serve the raw frame path with the bridge's frame limit; `options` are more
    `uvicorn.Config` arguments and override these (`ws="websockets-sansio"`: the ASGI path)."""
    return uvicorn.Config(app, **{"ws_max_size": max_frame_bytes, **UVICORN_OPTIONS, **options})
