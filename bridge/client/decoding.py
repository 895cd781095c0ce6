"""The official routes' answers back as the bridge's own types."""

from __future__ import annotations

from typing import Any

import orjson

from bridge.models import Run, ms_from_iso
from bridge.runtime.waitpoints import TokenStatus, WaitToken


def run_from_retrieve(body: dict[str, Any]) -> Run:
    """`GET /api/v3/runs/{id}`: every field of the run but `version`, `number` and `realtimeStreams`, which
    the official shape does not have (0, 0 and empty here; subscriptions carry them)."""
    return Run.from_public({**body, "attemptNumber": body.get("attemptCount", 0)})


def token_from_retrieve(body: dict[str, Any]) -> WaitToken:
    """`GET /api/v1/waitpoints/tokens/{id}`: its output is JSON text."""
    output = body.get("output")
    return WaitToken(
        id=body["id"],
        created_at=ms_from_iso(body["createdAt"]) or 0,
        timeout_at=ms_from_iso(body.get("timeoutAt")) or 0,
        idempotency_key=body.get("idempotencyKey"),
        idempotency_key_expires_at=ms_from_iso(body.get("idempotencyKeyExpiresAt")),
        tags=list(body.get("tags") or []),
        status=TokenStatus(body["status"]),
        output=None if output is None else orjson.loads(output),
        completed_at=ms_from_iso(body.get("completedAt")),
    )
