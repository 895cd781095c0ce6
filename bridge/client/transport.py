"""`Transport`: what the SDK needs from a bridge, so its public functions keep one signature whether the
bridge runs in this process (`LocalTransport`) or elsewhere (`RemoteTransport`)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any, Protocol

from bridge.client.results import BatchHandle, CreatedToken, RetrievedToken, RunHandle
from bridge.durations import Moment
from bridge.models import Run
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.feeds import FeedSpec
from bridge.runtime.waitpoints import Timeout


class Transport(Protocol):
    @property
    def secret_key(self) -> str:
        """The bridge's secret key: it signs the public access tokens the SDK makes."""

    async def trigger(self, task_id: str, payload: Any, options: TriggerOptions) -> RunHandle: ...

    async def batch_trigger(self, task_id: str, items: list[tuple[Any, TriggerOptions]]) -> BatchHandle: ...

    async def retrieve(self, run_id: str) -> Run:
        """The run now, its packets' values as `payload` and `output`."""

    async def cancel(self, run_id: str) -> Run: ...

    async def reschedule(self, run_id: str, delay: Moment) -> Run: ...

    def follow(self, spec: FeedSpec, stop_when_finished: bool) -> AsyncGenerator[Run, None]:
        """The feed's runs now, then each change (a run's states newest last, each newer than the one before);
        ends after a finished run when `stop_when_finished`."""

    def read(
        self, run_id: str, key: str, start_index: int, timeout_in_seconds: float | None
    ) -> AsyncGenerator[Any, None]:
        """Every chunk of the output stream from `start_index`, once, in order (see `streams.read`)."""

    async def send_input(self, run_id: str, stream_id: str, data: Any, idempotency_key: str | None) -> None: ...

    async def create_token(
        self,
        *,
        timeout: Timeout | None,
        idempotency_key: str | None,
        idempotency_key_ttl: str | int | float | None,
        tags: str | list[str] | None,
    ) -> CreatedToken: ...

    async def complete_token(self, token_id: str, data: Any) -> None: ...

    async def retrieve_token(self, token_id: str) -> RetrievedToken: ...

    async def aclose(self) -> None:
        """Closes the transport's own connections (a remote one's); the bridge itself stays as it is."""
