"""A loopback TCP proxy for fault tests: it forwards every connection to one upstream port, and can
`stall()` (stop forwarding both ways while every connection stays open, as a dead network path or a
frozen peer does) and `resume()` (forward what waited, in order)."""

from __future__ import annotations

import asyncio
import contextlib

from bridge.aio import cancel_and_wait

READ_BYTES = 64 * 1024


class TcpProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None, "the proxy is not started"
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """A Redis URL through the proxy."""
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            await cancel_and_wait(connection)

    def stall(self) -> None:
        """From now on no byte moves in either direction; connections are accepted but not served."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = asyncio.create_task(self._serve(reader, writer))
        self._connections.add(connection)
        connection.add_done_callback(self._connections.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream: asyncio.StreamWriter | None = None
        try:
            await self._flowing.wait()
            upstream_reader, upstream = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            pipes = {
                asyncio.create_task(self._pipe(reader, upstream)),
                asyncio.create_task(self._pipe(upstream_reader, writer)),
            }
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)  # one side closed: close both
            finally:
                for pipe in pipes:
                    await cancel_and_wait(pipe)
        except OSError:
            pass  # the upstream is down: the client sees its connection close
        finally:
            for end in (writer, upstream):
                if end is not None:
                    end.close()
                    with contextlib.suppress(OSError):
                        await end.wait_closed()

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while True:
                await self._flowing.wait()
                data = await source.read(READ_BYTES)
                if not data:
                    return
                await self._flowing.wait()  # read just before a stall: held until the resume
                sink.write(data)
                await sink.drain()
