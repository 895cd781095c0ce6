"""A WebSocket client in as little client CPU as possible, for the load generators: the handshake and RFC 6455
framing by hand on `asyncio.Protocol` (the servers send small unmasked, unfragmented text frames), one parse
per read. Subclasses get each text frame's payload in `text(payload, now_ns)`."""

from __future__ import annotations

import asyncio
import base64
import os
import time
from typing import Any


class FramedClient(asyncio.Protocol):
    def __init__(self, port: int, path: str = "/ws", first_frames: list[bytes] | None = None) -> None:
        self.buffer = b""
        self.upgraded = False
        self.errors: list[str] = []
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport subclasses
        self.first_frames = first_frames or []
        self.handshake = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def text(self, payload: bytes, now: int) -> None:
        raise NotImplementedError

    def send_text(self, payload: bytes, opcode: int = 0x1) -> None:
        mask = os.urandom(4)
        length = len(payload)
        if length < 126:
            header = bytes([0x80 | opcode, 0x80 | length])
        elif length < 1 << 16:
            header = bytes([0x80 | opcode, 0x80 | 126]) + length.to_bytes(2, "big")
        else:
            header = bytes([0x80 | opcode, 0x80 | 127]) + length.to_bytes(8, "big")
        masked = (
            int.from_bytes(payload, "big") ^ int.from_bytes(mask * (length // 4 + 1), "big") >> (8 * (4 - length % 4))
        ).to_bytes(length, "big")
        assert self.transport is not None
        self.transport.write(header + mask + masked)

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(self.handshake)

    def data_received(self, data: bytes) -> None:
        now = time.monotonic_ns()
        buffer = self.buffer + data
        if not self.upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self.buffer = buffer
                return
            if b" 101 " not in buffer[: buffer.find(b"\r\n")]:
                self.errors.append(buffer[: buffer.find(b"\r\n")].decode(errors="replace"))
                assert self.transport is not None
                self.transport.close()
                return
            self.upgraded = True
            buffer = buffer[end + 4 :]
            for frame in self.first_frames:
                self.send_text(frame)
        position = 0
        size = len(buffer)
        while size - position >= 2:
            opcode = buffer[position] & 0x0F
            length = buffer[position + 1] & 0x7F
            start = position + 2
            if length == 126:
                if size - position < 4:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 4], "big")
                start = position + 4
            elif length == 127:
                if size - position < 10:
                    break
                length = int.from_bytes(buffer[position + 2 : position + 10], "big")
                start = position + 10
            if size < start + length:
                break
            payload = buffer[start : start + length]
            position = start + length
            if opcode == 1:
                self.text(payload, now)
            elif opcode == 9:
                self.send_text(payload, 0xA)  # the server's keepalive ping
            elif opcode == 8:
                self.errors.append(f"closed by the server: {payload[2:].decode(errors='replace')}")
        self.buffer = buffer[position:]
