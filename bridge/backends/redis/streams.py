"""A run's output and input streams in Redis: one Redis stream per key, entry id 0-<index + 1>, and its
epoch next to it (keys.py), created by the script that stores its first chunk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from bridge.backends.base import StreamPage, StreamStore, new_epoch, stream_failed
from bridge.backends.channels import stream_channel
from bridge.backends.redis.connection import Connection, text, unavailable
from bridge.errors import NotFoundError, RunFinishedError, StreamOrderError


class RedisStreamStore(StreamStore):
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._keys = conn.keys
        self._append_script = conn.script("append_chunks", acknowledged=True)
        self._fail_script = conn.script("fail_stream", acknowledged=True)
        self._send_input_script = conn.script("send_input", acknowledged=True)
        self._read_chunks_script = conn.script("read_chunks")

    async def append_chunks(
        self, run_id: str, key: str, chunks: Sequence[bytes], first_index: int | None = None
    ) -> int:
        expected = "" if first_index is None else str(first_index)
        channel = self._keys.wire(stream_channel(run_id, key))
        publish = self._conn.publish_command
        args: list[str | int | bytes] = [self._conn.retention_ms, publish, channel, expected, new_epoch(), *chunks]
        async with unavailable("appending to a stream"):
            first = int(await self._append_script(keys=self._stream_keys(run_id, key), args=args))
        if first == -1:
            failure = await self.stream_failure(run_id, key)
            raise stream_failed(run_id, key, *(failure or (0, "failed")))
        if first < 0:
            held = "fewer chunks" if first == -2 else "other chunks"
            raise StreamOrderError(
                f"stream {key!r} of run {run_id} holds {held} than expected at index {first_index}", fewer=first == -2
            )
        return first

    async def fail_stream(self, run_id: str, key: str, reason: str) -> int:
        channel = self._keys.wire(stream_channel(run_id, key))
        publish = self._conn.publish_command
        args: list[str | int | bytes] = [self._conn.retention_ms, publish, channel, reason, new_epoch()]
        async with unavailable("marking a stream failed"):
            return int(await self._fail_script(keys=self._stream_keys(run_id, key), args=args))

    def _stream_keys(self, run_id: str, key: str) -> list[str]:
        """The keys of append_chunks.lua and fail_stream.lua: the stream, its failure record, its epoch."""
        keys = self._keys
        return [keys.run_stream(run_id, key), keys.run_stream_failure(run_id, key), keys.run_stream_epoch(run_id, key)]

    async def stream_failure(self, run_id: str, key: str) -> tuple[int, str] | None:
        async with unavailable("reading a stream's state"):
            record = self._keys.run_stream_failure(run_id, key)
            stopped, reason = await self._conn.redis.hmget(record, ["next", "reason"])
        return None if stopped is None else (int(stopped), text(reason or b""))

    async def append_input(self, run_id: str, key: str, data: bytes, idempotency_key: str | None = None) -> int:
        channel = self._keys.wire(stream_channel(run_id, key))
        publish = self._conn.publish_command
        args: list[str | int | bytes] = [self._conn.retention_ms, publish, channel, data, new_epoch()]
        if idempotency_key is not None:
            args.append(idempotency_key)
        keys = [
            self._keys.run(run_id),
            self._keys.run_stream(run_id, key),
            self._keys.input_keys(run_id, key),
            self._keys.run_stream_epoch(run_id, key),
        ]
        async with unavailable("sending to an input stream"):
            index = int(await self._send_input_script(keys=keys, args=args))
        if index == -1:
            raise NotFoundError(f"Run not found: {run_id}")
        if index == -2:
            raise RunFinishedError("Cannot send to input stream on a completed run")
        return index

    async def read_chunks(self, run_id: str, key: str, start: int, count: int, max_bytes: int) -> StreamPage:
        args: list[str | int] = [f"0-{start + 1}", count, max_bytes]
        keys = [self._keys.run_stream(run_id, key), self._keys.run_stream_epoch(run_id, key)]
        async with unavailable("reading a stream"):
            epoch, length, *chunks = await self._read_chunks_script(keys=keys, args=args)
        return StreamPage(None if epoch is None else text(epoch), int(length), cast(list[bytes], chunks))

    async def stream_length(self, run_id: str, key: str) -> int:
        async with unavailable("reading a stream's length"):
            return int(await self._conn.redis.xlen(self._keys.run_stream(run_id, key)))
