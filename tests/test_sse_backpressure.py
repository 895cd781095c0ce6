"""The official SSE route with a client that stops reading: its response waits at the socket (no queue of its
own), then the client gets every chunk once, in order, and the clean end."""

from __future__ import annotations

import asyncio
import re
import socket

import pytest

from bridge import tasks
from bridge.config import Settings
from tests.conftest import serving
from tests.support.helpers import open_gate, unique, until_final

pytestmark = pytest.mark.cluster

CHUNKS = 20_000  # ~600 KB of events: far more than the socket buffers and uvicorn's write buffer hold
EVENT = re.compile(rb"id: (\d+)-\w+\ndata: (\d+)\n\n")


async def test_a_client_that_stops_reading_gets_every_chunk_once_in_order(backend_settings: Settings) -> None:
    async with serving(backend_settings, send_buffer=4096) as server:
        gate = unique("gate")
        handle = await tasks.trigger("stream-chunks", {"count": CHUNKS, "gate": gate})
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        port = int(server.url.rsplit(":", 1)[1])
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=2**20)
        try:
            writer.write(
                f"GET /realtime/v1/streams/{handle.id}/numbers HTTP/1.1\r\nHost: bridge\r\n"
                f"Authorization: Bearer {handle.public_access_token}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            open_gate(gate)
            await until_final(handle.id)  # every chunk stored while the client read nothing
            body = b""
            async with asyncio.timeout(30):
                while not body.endswith(b"\r\n0\r\n\r\n"):  # the chunked body's clean end
                    body += await reader.read(65536)
        finally:
            writer.close()
    got = [(int(index), int(data)) for index, data in EVENT.findall(body)]
    assert got == [(i, i) for i in range(CHUNKS)]
