"""The official REST routes the hooks and the Node SDK call: trigger, batch, retrieve, cancel, claims.

Payloads arrive as the official clients serialise them (`payloadType` `application/super+json`,
`application/json` or `text/plain`) and are stored as plain JSON values, which is what Python
tasks receive.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from bridge.durations import parse_duration_seconds
from bridge.errors import NotFoundError, UnauthorizedError, UnprocessableError, ValidationError
from bridge.models import Run, RunStatus, new_id
from bridge.runtime.access import Principal, create_public_token, require_run_read, run_access_token
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.server.http import bridge_of, handles_errors, json_response, principal_of, read_body, read_json_object

TOKEN_CLAIMS_SUBJECT = "bridge"
_RETRIEVE_COMPLETED = frozenset({RunStatus.COMPLETED, RunStatus.CANCELED, RunStatus.FAILED, RunStatus.CRASHED})


def decode_payload(payload: Any, payload_type: Any) -> Any:
    """The value an official client serialised: superjson's `json` part, JSON, or plain text."""
    if payload is None:
        return None
    if not isinstance(payload, str):
        return payload  # already a JSON value (curl users, our own clients)
    if payload_type == "text/plain":
        return payload
    if payload_type == "application/store":
        raise ValidationError("offloaded payloads (over 128 KiB, application/store) are not supported by the bridge")
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"payload is not valid JSON for payloadType {payload_type!r}") from exc
    if payload_type == "application/super+json":
        if not isinstance(decoded, dict):
            raise ValidationError('a super+json payload is an object with a "json" field')
        return decoded.get("json")
    return decoded


def _trigger_options(options: Any, request_key: str | None) -> TriggerOptions:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValidationError("options must be an object")
    tags = options.get("tags") or []
    key = options.get("idempotencyKey")
    ttl = options.get("idempotencyKeyTTL")
    metadata = options.get("metadata")
    if key is not None and not isinstance(key, str):
        raise ValidationError("options.idempotencyKey must be a string")
    if ttl is not None and not isinstance(ttl, (str, int)):
        raise ValidationError('options.idempotencyKeyTTL must be a duration like "1h" or seconds')
    if isinstance(metadata, str):
        metadata = decode_payload(metadata, options.get("metadataType") or "application/json")
    return TriggerOptions(
        tags=tags,
        idempotency_key=key,
        idempotency_key_ttl=ttl,
        metadata=metadata,
        is_test=options.get("test") is True,
        request_key=request_key,
    )


def claims_headers(scopes: list[str], token: str) -> dict[str, str]:
    claims = {"sub": TOKEN_CLAIMS_SUBJECT, "pub": True, "scopes": scopes}
    return {"x-trigger-jwt": token, "x-trigger-jwt-claims": orjson.dumps(claims).decode()}


async def _check_trigger(bridge: Bridge, task_id: str, payload: Any, options: TriggerOptions) -> None:
    """Refuses what `engine.trigger` would refuse, before anything is consumed (a one-time token, a batch index)."""
    if not await bridge.broker.task_exists(task_id):
        raise NotFoundError(f"Task not found: no worker has registered a task with id {task_id!r}")
    bridge.engine.check_size("payload", payload)
    if options.metadata is not None and not isinstance(options.metadata, dict):
        raise ValidationError("metadata must be an object")
    bridge.engine.check_size("metadata", options.metadata or {})
    bridge.engine.check_tags(options.tags)
    if options.idempotency_key_ttl is not None:
        parse_duration_seconds(options.idempotency_key_ttl)


async def _consume_one_time(bridge: Bridge, principal: Principal, task_id: str, request_key: str | None) -> None:
    """Refuses a one-time token's second use, except a retry of the request that used it (same
    `x-trigger-request-idempotency-key`: its first answer was lost), which gets the same run."""
    if principal.one_time_key is None:
        return
    ttl = bridge.settings.retention_seconds
    used_by = f"otu-request:{principal.one_time_key}:{request_key}"
    if await bridge.broker.claim_once(f"otu:{principal.one_time_key}", ttl):
        if request_key:
            await bridge.broker.claim_once(used_by, ttl)  # remembers which request used the token
        return
    if request_key and not await bridge.broker.claim_once(used_by, ttl):
        return  # already remembered: this request used the token, and this is its retry
    raise UnprocessableError(f"Cannot trigger {task_id} with a one-time use token as it has already been used.")


@handles_errors
async def trigger_task(request: Request) -> Response:
    bridge = bridge_of(request)
    task_id = request.path_params["task_id"]
    principal = principal_of(request)
    principal.require_any("trigger", [("tasks", task_id)])
    body = await read_json_object(request, bridge.settings.limits.max_request_bytes)
    options = body.get("options") or {}
    payload = decode_payload(body.get("payload"), options.get("payloadType") if isinstance(options, dict) else None)
    request_key = request.headers.get("x-trigger-request-idempotency-key")
    trigger_options = _trigger_options(options, request_key)
    await _check_trigger(bridge, task_id, payload, trigger_options)
    await _consume_one_time(bridge, principal, task_id, request_key)
    run, created = await bridge.engine.trigger(task_id, payload, trigger_options)
    scopes = [f"read:runs:{run.id}", f"write:inputStreams:{run.id}"]
    headers = claims_headers(scopes, run_access_token(bridge.settings.secret_key, run.id))
    return json_response(
        {"id": run.id, "isCached": not created and trigger_options.idempotency_key is not None}, headers=headers
    )


def _batch_key(batch_id: str) -> str:
    return f"batch:{batch_id}"


@handles_errors
async def create_batch(request: Request) -> Response:
    """Phase one of the official two-phase batch: reserve a batch id (its run count is remembered for
    the retention); items follow."""
    bridge = bridge_of(request)
    principal = principal_of(request)
    body = await read_json_object(request, bridge.settings.limits.max_request_bytes)
    run_count = body.get("runCount")
    task_ids = body.get("taskIdentifiers") or []
    if not isinstance(run_count, int) or isinstance(run_count, bool) or run_count < 1:
        raise ValidationError("runCount must be a positive integer")
    if run_count > bridge.settings.limits.max_batch_items:
        raise ValidationError(f"a batch has at most {bridge.settings.limits.max_batch_items} items")
    if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
        raise ValidationError("taskIdentifiers must be a list of strings")
    for task_id in task_ids:
        principal.require_any("batchTrigger", [("tasks", task_id)])
    batch_id = new_id("batch_")
    await bridge.broker.put_value(_batch_key(batch_id), str(run_count).encode(), bridge.settings.retention_seconds)
    scopes = [f"read:batch:{batch_id}"]
    token = create_public_token(bridge.settings.secret_key, scopes, "1h")
    return json_response(
        {"id": batch_id, "runCount": run_count, "isCached": False},
        status=202,
        headers=claims_headers(scopes, token),
    )


@handles_errors
async def add_batch_items(request: Request) -> Response:
    """Phase two: NDJSON items (`{"index", "task", "payload", "options"}`), deduplicated by index."""
    bridge = bridge_of(request)
    principal = principal_of(request)
    batch_id = request.path_params["batch_id"]
    announced = await bridge.broker.get_value(_batch_key(batch_id)) if len(batch_id) <= 64 else None
    if announced is None:  # not created by phase one (or expired)
        raise NotFoundError(f"Batch not found: {batch_id[:64]}")
    run_count = int(announced)
    body = await read_body(request, bridge.settings.limits.max_request_bytes)
    items: list[tuple[int, str, Any, TriggerOptions]] = []
    for number, line in enumerate(body.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise ValidationError(f"line {number} is not valid JSON") from exc
        if not isinstance(item, dict) or not isinstance(item.get("task"), str):
            raise ValidationError(f'line {number} needs "task" (a string)')
        index = item.get("index", number - 1)
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < run_count:
            raise ValidationError(f"line {number}: index must be an integer from 0 to runCount - 1 ({run_count - 1})")
        options = item.get("options") or {}
        payload = decode_payload(item.get("payload"), options.get("payloadType") if isinstance(options, dict) else None)
        principal.require_any("batchTrigger", [("tasks", item["task"])])
        items.append((index, item["task"], payload, _trigger_options(options, None)))
    if len(items) > bridge.settings.limits.max_batch_items:
        raise ValidationError(f"a batch has at most {bridge.settings.limits.max_batch_items} items")
    for _, task_id, payload, options in items:  # all or nothing: an index is marked sent only if its run is stored
        await _check_trigger(bridge, task_id, payload, options)
    accepted = deduplicated = 0
    retention = bridge.settings.retention_seconds
    for index, task_id, payload, options in items:
        if not await bridge.broker.claim_once(f"batch-item:{batch_id}:{index}", retention):
            deduplicated += 1
            continue
        await bridge.engine.trigger(task_id, payload, options, batch_id=batch_id)
        accepted += 1
    return json_response({"id": batch_id, "itemsAccepted": accepted, "itemsDeduplicated": deduplicated, "sealed": True})


def retrieve_body(run: Run) -> dict[str, Any]:
    """`GET /api/v3/runs/{id}` as the official schema wants it: absent fields omitted, never null."""
    status = run.status
    completed = status in _RETRIEVE_COMPLETED
    body: dict[str, Any] = {
        "id": run.id,
        "status": status.value,
        "taskIdentifier": run.task_identifier,
        "isQueued": status is RunStatus.QUEUED,
        "isExecuting": status is RunStatus.EXECUTING,
        "isWaiting": status is RunStatus.WAITING,
        "isCompleted": completed,
        "isSuccess": status is RunStatus.COMPLETED,
        "isFailed": completed and status is not RunStatus.COMPLETED,
        "isCancelled": status is RunStatus.CANCELED,
        "isTest": run.is_test,
        "createdAt": run.to_public()["createdAt"],
        "updatedAt": run.to_public()["updatedAt"],
        "tags": sorted(run.tags),
        "costInCents": 0,
        "baseCostInCents": 0,
        "durationMs": run.duration_ms,
        "depth": 0,
        "triggerFunction": "batchTrigger" if run.batch_id else "trigger",
        "relatedRuns": {},
        "metadata": run.metadata,
        "payload": run.payload,
        "attemptCount": 0 if status is RunStatus.QUEUED else 1,
    }
    public = run.to_public()
    optional = {
        "idempotencyKey": run.idempotency_key,
        "batchId": run.batch_id,
        "startedAt": public["startedAt"],
        "finishedAt": public["finishedAt"],
        "output": run.output if status is RunStatus.COMPLETED else None,
        "error": run.error.to_dict() if run.error else None,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


@handles_errors
async def retrieve_run(request: Request) -> Response:
    bridge = bridge_of(request)
    principal = principal_of(request)
    run = await bridge.engine.retrieve(request.path_params["run_id"])
    require_run_read(principal, run)
    return json_response(retrieve_body(run))


@handles_errors
async def cancel_run(request: Request) -> Response:
    bridge = bridge_of(request)
    principal = principal_of(request)
    run = await bridge.engine.retrieve(request.path_params["run_id"])
    principal.require_any("write", [("runs", run.id), ("tasks", run.task_identifier)])
    await bridge.engine.cancel(run.id)
    return json_response({"id": run.id})


@handles_errors
async def jwt_claims(request: Request) -> Response:
    """The claims the official SDK puts in the tokens it signs locally with the secret key."""
    try:
        principal = principal_of(request)
    except UnauthorizedError:
        principal = None
    if principal is None or not principal.is_backend:
        raise UnauthorizedError("Invalid or Missing API key")
    return json_response({"sub": TOKEN_CLAIMS_SUBJECT, "pub": True})
