"""`wait`: wait tokens, named after the official SDK's.

token = await wait.create_token(timeout="10m", idempotency_key="review-42", tags=["doc:42"])
result = await wait.for_token(token)           # in a task: WAITING, worker slot freed meanwhile
if result.ok: ...                              # result.output; result.unwrap() raises on timeout
await wait.complete_token(token_id, {"approved": True})   # anywhere: a backend, a script
await wait.retrieve_token(token_id)            # status WAITING / COMPLETED / TIMED_OUT, output, times
await wait.for_(minutes=5)                     # in a task: the official `wait.for`, WAITING meanwhile
await wait.until(datetime(2027, 1, 1, tzinfo=UTC))

A page completes a token with the token's `public_access_token` (the `useWaitToken` hook), and a
webhook by POSTing JSON to its `url`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from bridge.durations import deadline_from
from bridge.errors import ValidationError
from bridge.models import now_ms
from bridge.runtime import state
from bridge.runtime.access import waitpoint_access_token
from bridge.runtime.waitpoints import Timeout, TokenStatus, WaitpointTimeoutError, WaitToken, timeout_error
from bridge.worker.context import current_run_scope, require_run_scope

T = TypeVar("T")
_UNIT_SECONDS = {"seconds": 1, "minutes": 60, "hours": 3600, "days": 86400, "weeks": 604800}
__all__ = [
    "CreatedToken",
    "RetrievedToken",
    "TokenResult",
    "TokenStatus",
    "WaitpointTimeoutError",
    "complete_token",
    "create_token",
    "for_",
    "for_token",
    "retrieve_token",
    "until",
]


@dataclass(frozen=True)
class CreatedToken:
    id: str
    url: str  # POST JSON here to complete the token (a webhook's target); it carries its own signature
    public_access_token: str  # completes this token only (`write:waitpoints:<id>`), for 24 hours
    is_cached: bool  # True when an idempotency key returned an existing token


@dataclass(frozen=True)
class TokenResult(Generic[T]):
    """What `for_token` returns: `ok` with the completion's `output`, or not ok with the timeout `error`."""

    ok: bool
    output: T | None = None
    error: WaitpointTimeoutError | None = None

    def unwrap(self) -> T:
        """The output; raises the WaitpointTimeoutError when the token timed out."""
        if self.error is not None:
            raise self.error
        return self.output  # type: ignore[return-value]  # None is a valid completion value


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


TokenRef = str | CreatedToken | RetrievedToken


def _token_id(token: TokenRef) -> str:
    return token if isinstance(token, str) else token.id


def _datetime(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC)


async def create_token(
    *,
    timeout: Timeout | None = None,
    idempotency_key: str | None = None,
    idempotency_key_ttl: str | int | float | None = None,
    tags: str | list[str] | None = None,
) -> CreatedToken:
    """A new token. `timeout`: "30s", "10m", "2h", "3d", "4w", seconds, or a datetime (at most 365 days
    ahead; a past date times out at once); without one it times out when the retention ends (7 days by
    default), when it would be deleted. The same `idempotency_key` within its TTL (default: the token's
    life) returns the same token with `is_cached=True`."""
    bridge = await state.current()

    async def create() -> dict[str, Any]:
        token, created = await bridge.waitpoints.create(
            timeout=timeout, idempotency_key=idempotency_key, idempotency_key_ttl=idempotency_key_ttl, tags=tags
        )
        return {"id": token.id, "isCached": not created}

    scope = current_run_scope()  # in a task, a durable step: a resumed run gets the token it created before
    created = await (scope.durable.step("wait.create_token", idempotency_key or "", create) if scope else create())
    return CreatedToken(
        id=created["id"],
        url=bridge.waitpoints.callback_url(created["id"]),
        public_access_token=waitpoint_access_token(bridge.settings.secret_key, created["id"]),
        is_cached=created["isCached"],
    )


async def for_token(token: TokenRef) -> TokenResult[Any]:
    """Inside a task: waits until the token is completed or times out. Meanwhile the run shows
    WAITING and its worker slot runs other runs. A token already done returns at once."""
    durable = require_run_scope("wait.for_token").durable
    token_id = _token_id(token)
    done = await durable.wait_for_token(token_id)
    if done["status"] == TokenStatus.TIMED_OUT:
        return TokenResult(ok=False, error=timeout_error(token_id, done["output"]))
    return TokenResult(ok=True, output=done["output"])


async def for_(*, seconds: float = 0, minutes: float = 0, hours: float = 0, days: float = 0, weeks: float = 0) -> None:
    """Inside a task: pauses for the sum of the given periods (the official `wait.for`; `for` is a
    Python keyword). The run shows WAITING and its worker slot runs other runs meanwhile."""
    periods = {"seconds": seconds, "minutes": minutes, "hours": hours, "days": days, "weeks": weeks}
    total = 0.0
    for unit, amount in periods.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not math.isfinite(amount) or amount < 0:
            raise ValidationError(f"wait.for_: {unit} must be a finite number, not negative")
        total += amount * _UNIT_SECONDS[unit]
    await _pause(total, "wait.for_")


async def until(date: datetime, *, throw_if_in_the_past: bool = False) -> None:
    """Inside a task: pauses until `date` (naive datetimes are UTC), WAITING meanwhile (the official
    `wait.until`). A date in the past returns at once, or raises ValidationError with
    `throw_if_in_the_past`."""
    if not isinstance(date, datetime):
        raise ValidationError("wait.until: date must be a datetime")
    seconds = (deadline_from(date) - datetime.now(UTC)).total_seconds()
    if seconds < 0 and throw_if_in_the_past:
        raise ValidationError("Date is in the past")
    await _pause(max(0.0, seconds), "wait.until")


async def _pause(seconds: float, what: str) -> None:
    durable = require_run_scope(what).durable
    limit = (await state.current()).settings.limits.max_wait_token_timeout_seconds
    if seconds > limit:
        raise ValidationError(f"{what}: at most {limit / 86400:g} days")
    await durable.sleep_until(what, now_ms() + int(seconds * 1000))


async def complete_token(token: TokenRef, data: Any = None) -> None:
    """Completes the token with `data` (any JSON value, at most 1 MiB encoded). Completing a token that
    is already done succeeds and keeps its first output. NotFoundError for an unknown token."""
    await (await state.current()).waitpoints.complete(_token_id(token), data)


async def retrieve_token(token: TokenRef) -> RetrievedToken:
    bridge = await state.current()
    found = await bridge.waitpoints.retrieve(_token_id(token))
    return _retrieved(found, bridge.waitpoints.callback_url(found.id))


def _retrieved(token: WaitToken, url: str) -> RetrievedToken:
    timed_out = token.status is TokenStatus.TIMED_OUT
    return RetrievedToken(
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
