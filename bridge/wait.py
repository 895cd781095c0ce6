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
from datetime import datetime
from typing import Any, Generic, TypeVar

from bridge.client import state as client
from bridge.client.local import created_token
from bridge.client.results import CreatedToken, RetrievedToken
from bridge.durations import deadline_from
from bridge.errors import ValidationError
from bridge.runtime.waitpoints import Timeout, TokenStatus, WaitpointTimeoutError, timeout_error
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


TokenRef = str | CreatedToken | RetrievedToken


def _token_id(token: TokenRef) -> str:
    return token if isinstance(token, str) else token.id


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
    scope = current_run_scope()
    if scope is None:
        return await (await client.current()).create_token(
            timeout=timeout, idempotency_key=idempotency_key, idempotency_key_ttl=idempotency_key_ttl, tags=tags
        )
    bridge = scope.bridge

    async def create() -> dict[str, Any]:
        token, created = await bridge.waitpoints.create(
            timeout=timeout, idempotency_key=idempotency_key, idempotency_key_ttl=idempotency_key_ttl, tags=tags
        )
        return {"id": token.id, "isCached": not created}

    # In a task, a durable step: a resumed run gets the token it created before.
    created = await scope.durable.step("wait.create_token", idempotency_key or "", create)
    return created_token(bridge, created["id"], created["isCached"])


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
    seconds = (deadline_from(date) - require_run_scope("wait.until").bridge.clock.now()).total_seconds()
    if seconds < 0 and throw_if_in_the_past:
        raise ValidationError("Date is in the past")
    await _pause(max(0.0, seconds), "wait.until")


async def _pause(seconds: float, what: str) -> None:
    scope = require_run_scope(what)
    limit = scope.bridge.settings.limits.max_wait_token_timeout_seconds
    if seconds > limit:
        raise ValidationError(f"{what}: at most {limit / 86400:g} days")
    await scope.durable.sleep_until(what, scope.bridge.clock.now_ms() + int(seconds * 1000))


async def complete_token(token: TokenRef, data: Any = None) -> None:
    """Completes the token with `data` (any JSON value, at most 1 MiB encoded). Completing a token that
    is already done succeeds and keeps its first output. NotFoundError for an unknown token."""
    await (await client.current()).complete_token(_token_id(token), data)


async def retrieve_token(token: TokenRef) -> RetrievedToken:
    return await (await client.current()).retrieve_token(_token_id(token))
