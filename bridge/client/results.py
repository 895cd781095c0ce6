"""What the SDK's calls hand back, the same whichever transport made them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bridge.runtime.waitpoints import TokenStatus, WaitpointTimeoutError, WaitToken


@dataclass(frozen=True)
class RunHandle:
    id: str
    task_identifier: str
    public_access_token: str
    is_cached: bool


@dataclass(frozen=True)
class BatchHandle:
    batch_id: str
    runs: list[RunHandle]
    public_access_token: str  # reads every run of the batch


@dataclass(frozen=True)
class CreatedToken:
    id: str
    url: str  # POST JSON here to complete the token (a webhook's target); it carries its own signature
    public_access_token: str  # completes this token only (`write:waitpoints:<id>`), for 24 hours
    is_cached: bool  # True when an idempotency key returned an existing token


@dataclass(frozen=True)
class RetrievedToken:
    id: str
    url: str
    status: TokenStatus
    created_at: datetime
    timeout_at: datetime  # without a timeout given: when the retention ends (the token is deleted then)
    tags: list[str]
    completed_at: datetime | None = None
    idempotency_key: str | None = None
    idempotency_key_expires_at: datetime | None = None
    output: Any = None  # the completion's data when COMPLETED
    error: WaitpointTimeoutError | None = None  # set when TIMED_OUT

    @classmethod
    def of(cls, token: WaitToken, url: str) -> RetrievedToken:
        timed_out = token.status is TokenStatus.TIMED_OUT
        return cls(
            id=token.id,
            url=url,
            status=token.status,
            created_at=datetime.fromtimestamp(token.created_at / 1000, tz=UTC),
            tags=list(token.tags),
            timeout_at=datetime.fromtimestamp(token.timeout_at / 1000, tz=UTC),
            completed_at=_datetime(token.completed_at),
            idempotency_key=token.idempotency_key,
            idempotency_key_expires_at=_datetime(token.idempotency_key_expires_at),
            output=None if timed_out else token.output,
            error=token.timeout_error() if timed_out else None,
        )


def _datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)
