"""A lean WebSocket client for tests with thousands of connections.

One asyncio Protocol per connection and nothing else: no task per connection, no compression
(so what the server sends occupies socket buffers byte for byte), server frames parsed by hand
and handed, decoded, to a callback as they arrive. It answers pings and echoes a close. It can
stop reading (`pause_reading`) with a small receive buffer, so a test can stall it for real.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
import struct
from collections.abc import Callable
from typing import Any, cast

import orjson
from websockets.frames import apply_mask

Frame = dict[str, Any]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
CONNECT_TIMEOUT = 10.0


class HandshakeError(ConnectionError):
    pass


class LeanWebSocket(asyncio.Protocol):
    """Connect with `await LeanWebSocket.connect(...)`; every server frame goes to `on_frame`, in order.

    `closed` resolves once the connection has ended: to the close code the server sent, or None when
    it ended without a close frame (refused, reset, or cut while the client was not reading).
    """

    def __init__(self, on_frame: Callable[[Frame], None], request: bytes, key: bytes) -> None:
        self.on_frame = on_frame
        self._request = request
        self._accept = base64.b64encode(hashlib.sha1(key + _GUID).digest())
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._fragments: list[bytes] = []
        self._upgraded = False
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self._close_code: int | None = None

    @classmethod
    async def connect(
        cls, port: int, on_frame: Callable[[Frame], None], *, receive_buffer: int | None = None, path: str = "/ws"
    ) -> LeanWebSocket:
        """Opens a connection to 127.0.0.1:`port`; with `receive_buffer`, the socket's SO_RCVBUF (set before
        connecting, so the TCP window never grows past it). Raises OSError or HandshakeError."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            if receive_buffer is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            sock.setblocking(False)
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await loop.sock_connect(sock, ("127.0.0.1", port))
        except BaseException:
            sock.close()
            raise
        key = base64.b64encode(os.urandom(16))
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        transport, client = await loop.create_connection(lambda: cls(on_frame, request, key), sock=sock)
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await client.opened
        except BaseException:
            transport.abort()  # the transport owns the socket now
            raise
        return client

    # sending
    def send(self, frame: Frame) -> None:
        self._send(TEXT, orjson.dumps(frame))

    def _send(self, opcode: int, payload: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        self._transport.write(header + mask + apply_mask(payload, mask))

    @property
    def local_port(self) -> int:
        assert self._transport is not None
        return int(self._transport.get_extra_info("sockname")[1])

    def pause_reading(self) -> None:
        assert self._transport is not None
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        assert self._transport is not None
        self._transport.resume_reading()

    def close(self) -> None:
        """Closes at once (no closing handshake): the test is done with this connection."""
        if self._transport is not None:
            self._transport.abort()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports are not its subclasses
        self._transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or HandshakeError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(self._close_code)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._upgraded and not self._handshake():
            return
        self._frames()

    def _handshake(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self._buffer[:end]).lower()
        del self._buffer[: end + 4]
        if not head.startswith(b"http/1.1 101") or b"sec-websocket-accept: " + self._accept.lower() not in head:
            self.opened.set_exception(HandshakeError(head.decode(errors="replace")[:200]))
            assert self._transport is not None
            self._transport.abort()
            return False
        self._upgraded = True
        self.opened.set_result(None)
        return True

    def _frames(self) -> None:
        buffer, start = self._buffer, 0
        while len(buffer) - start >= 2:
            first, second = buffer[start], buffer[start + 1]
            length, offset = second & 0x7F, start + 2
            if length == 126:
                if len(buffer) - offset < 2:
                    break
                (length,) = struct.unpack_from("!H", buffer, offset)
                offset += 2
            elif length == 127:
                if len(buffer) - offset < 8:
                    break
                (length,) = struct.unpack_from("!Q", buffer, offset)
                offset += 8
            if len(buffer) - offset < length:
                break
            payload = bytes(buffer[offset : offset + length])  # server frames are never masked
            start = offset + length
            self._frame(first & 0x0F, bool(first & 0x80), payload)
        del buffer[:start]

    def _frame(self, opcode: int, final: bool, payload: bytes) -> None:
        if opcode in (TEXT, BINARY, CONTINUATION):
            self._fragments.append(payload)
            if final:
                message, self._fragments = b"".join(self._fragments), []
                self.on_frame(orjson.loads(message))
        elif opcode == PING:
            self._send(PONG, payload)
        elif opcode == CLOSE:
            self._close_code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else None
            self._send(CLOSE, payload[:2])
            assert self._transport is not None
            self._transport.close()


CLOSE_ALL_TIMEOUT = 10.0


async def close_all(clients: list[LeanWebSocket]) -> None:
    """Aborts every connection and waits (bounded) until each has ended."""
    for client in clients:
        client.close()
    if clients:
        await asyncio.wait([client.closed for client in clients], timeout=CLOSE_ALL_TIMEOUT)
