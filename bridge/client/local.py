"""`LocalTransport`: the SDK's calls on a `Bridge` in this process (the in-memory backend's server or
worker, or a bridge of the SDK's own on Redis)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import replace
from typing import Any

from bridge.client.results import BatchHandle, CreatedToken, RetrievedToken, RunHandle
from bridge.durations import Moment
from bridge.models import Run, now_ms
from bridge.runtime.access import create_public_token, run_access_token, waitpoint_access_token
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.feeds import FeedSpec
from bridge.runtime.input_streams import send_input
from bridge.runtime.waitpoints import Timeout


def created_token(bridge: Bridge, token_id: str, is_cached: bool) -> CreatedToken:
    """A token created on `bridge`, with its callback URL and public access token."""
    return CreatedToken(
        id=token_id,
        url=bridge.waitpoints.callback_url(token_id),
        public_access_token=waitpoint_access_token(bridge.settings.secret_key, token_id),
        is_cached=is_cached,
    )


class LocalTransport:
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    @property
    def secret_key(self) -> str:
        return self.bridge.settings.secret_key

    def _handle(self, run: Run, created: bool) -> RunHandle:
        return RunHandle(run.id, run.task_identifier, run_access_token(self.secret_key, run.id), not created)

    async def trigger(self, task_id: str, payload: Any, options: TriggerOptions) -> RunHandle:
        return self._handle(*await self.bridge.engine.trigger(task_id, payload, options))

    async def batch_trigger(self, task_id: str, items: list[tuple[Any, TriggerOptions]]) -> BatchHandle:
        batch_id, results = await self.bridge.engine.batch_trigger([(task_id, *item) for item in items])
        return BatchHandle(
            batch_id=batch_id,
            runs=[self._handle(run, created) for run, created in results],
            public_access_token=create_public_token(self.secret_key, [f"read:batch:{batch_id}"], "1h"),
        )

    async def retrieve(self, run_id: str) -> Run:
        engine = self.bridge.engine
        return await engine.packets.resolved(await engine.retrieve(run_id))

    async def cancel(self, run_id: str) -> Run:
        return await self.bridge.engine.cancel(run_id)

    async def reschedule(self, run_id: str, delay: Moment) -> Run:
        return await self.bridge.engine.reschedule(run_id, delay)

    async def follow(self, spec: FeedSpec, stop_when_finished: bool) -> AsyncGenerator[Run, None]:
        if spec.kind == "tags":  # older runs are gone: the window ends at the retention
            retention_start = now_ms() - int(self.bridge.settings.retention_seconds * 1000)
            spec = replace(spec, since_ms=max(spec.since_ms, retention_start))
        cursor = self.bridge.feeds.cursor(spec)
        try:
            for run in await cursor.open():
                yield run
                if stop_when_finished and run.status.is_final:
                    return
            while True:
                for run in await cursor.next_changes(timeout=None):
                    yield run
                    if stop_when_finished and run.status.is_final:
                        return
        finally:
            await cursor.close()

    async def read(
        self, run_id: str, key: str, start_index: int, timeout_in_seconds: float | None
    ) -> AsyncGenerator[Any, None]:
        async with self.bridge.output_streams.reader(run_id, key, start_index, timeout_in_seconds) as reader:
            async for chunk in reader.chunks():
                yield chunk.value()

    async def send_input(self, run_id: str, stream_id: str, data: Any, idempotency_key: str | None) -> None:
        await send_input(self.bridge.engine, run_id, stream_id, data, idempotency_key)

    async def create_token(
        self,
        *,
        timeout: Timeout | None,
        idempotency_key: str | None,
        idempotency_key_ttl: str | int | float | None,
        tags: str | list[str] | None,
    ) -> CreatedToken:
        token, created = await self.bridge.waitpoints.create(
            timeout=timeout, idempotency_key=idempotency_key, idempotency_key_ttl=idempotency_key_ttl, tags=tags
        )
        return created_token(self.bridge, token.id, not created)

    async def complete_token(self, token_id: str, data: Any) -> None:
        await self.bridge.waitpoints.complete(token_id, data)

    async def retrieve_token(self, token_id: str) -> RetrievedToken:
        token = await self.bridge.waitpoints.retrieve(token_id)
        return RetrievedToken.of(token, self.bridge.waitpoints.callback_url(token.id))

    async def aclose(self) -> None:
        """Nothing of its own to close: the bridge is stopped by whoever started it."""
