"""Triggering with a public token, where a one-time token (`otu: true`) triggers one run, once.

The token's hash is claimed on its first use. A retry of that same request (the official
clients' `x-trigger-request-idempotency-key`, sent again when the first answer was lost) is
let through, and the engine's per-request key gives it the run the first attempt created.
"""

from __future__ import annotations

from typing import Any

from bridge.errors import UnprocessableError
from bridge.models import Run
from bridge.runtime.access import Principal
from bridge.runtime.engine import RunEngine, TriggerOptions


async def trigger_as(
    engine: RunEngine, principal: Principal, task_id: str, payload: Any, options: TriggerOptions
) -> tuple[Run, bool]:
    """`engine.trigger` for `principal`; a one-time token is consumed only by a trigger that would succeed."""
    if principal.one_time_key is not None:
        await engine.check_trigger(task_id, payload, options)
        await _consume(engine, principal.one_time_key, task_id, options.request_key)
    return await engine.trigger(task_id, payload, options)


async def _consume(engine: RunEngine, one_time_key: str, task_id: str, request_key: str | None) -> None:
    """Refuses a one-time token's second use, except a retry of the request that used it."""
    broker, ttl = engine.broker, engine.settings.retention_seconds
    used_by = f"otu-request:{one_time_key}:{request_key}"
    if await broker.claim_once(f"otu:{one_time_key}", ttl):
        if request_key:
            await broker.claim_once(used_by, ttl)  # remembers which request used the token
        return
    if request_key and not await broker.claim_once(used_by, ttl):
        return  # already remembered: this request used the token, and this is its retry
    raise UnprocessableError(f"Cannot trigger {task_id} with a one-time use token as it has already been used.")
