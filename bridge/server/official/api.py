"""The official REST routes the hooks and the Node SDK call: trigger, batch, retrieve, cancel, reschedule,
claims.

Payloads arrive as the official clients serialise them (`payloadType` `application/super+json`,
`application/json` or `text/plain`) and are stored as plain JSON values, which is what Python
tasks receive; a payload uploaded first is a packet's storage path (`application/store`,
bridge/runtime/packets.py). Every official trigger option is read or refused (`trigger_options`).
"""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from bridge.errors import NotFoundError, UnauthorizedError, ValidationError
from bridge.models import Run, RunStatus, iso_from_ms
from bridge.runtime.access import create_public_token, require_run_read, run_access_token
from bridge.runtime.batches import BatchItem, is_item_index
from bridge.runtime.debounce import from_official
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.max_duration import check_max_duration
from bridge.runtime.packets import Packets, decode_payload
from bridge.runtime.queues import check_concurrency_key, check_priority, parse_queue
from bridge.runtime.retries import check_max_attempts
from bridge.runtime.trigger_options import refuse_unsupported, refuse_unsupported_batch
from bridge.runtime.trigger_tokens import trigger_as
from bridge.server.http import bridge_of, handles_errors, json_response, principal_of, read_body, read_json_object

TOKEN_CLAIMS_SUBJECT = "bridge"
_RETRIEVE_COMPLETED = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.CANCELED,
        RunStatus.FAILED,
        RunStatus.CRASHED,
        RunStatus.EXPIRED,
        RunStatus.TIMED_OUT,
    }
)


def parse_trigger_options(options: Any, request_key: str | None, max_attempts_limit: int) -> TriggerOptions:
    if options is None:
        options = {}
    if not isinstance(options, dict):
        raise ValidationError("options must be an object")
    refuse_unsupported(options)
    tags = options.get("tags") or []
    key = options.get("idempotencyKey")
    key_ttl = options.get("idempotencyKeyTTL")
    metadata = options.get("metadata")
    if key is not None and not isinstance(key, str):
        raise ValidationError("options.idempotencyKey must be a string")
    if key_ttl is not None and not isinstance(key_ttl, (str, int)):
        raise ValidationError('options.idempotencyKeyTTL must be a duration like "1h" or seconds')
    if isinstance(metadata, str):
        metadata = decode_payload(metadata, options.get("metadataType") or "application/json")
    max_attempts = options.get("maxAttempts")
    if max_attempts is not None:
        check_max_attempts(max_attempts, max_attempts_limit, "options.maxAttempts")
    delay, ttl = options.get("delay"), options.get("ttl")
    if delay is not None and not isinstance(delay, str):  # the SDK sends a Date as its ISO text
        raise ValidationError('options.delay is a duration like "1h" or an ISO date')
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, (str, int))):
        raise ValidationError('options.ttl is a duration like "10m" or whole seconds')
    queue_name, queue_limit = parse_queue(options.get("queue"), "options.queue", "concurrencyLimit")
    concurrency_key = options.get("concurrencyKey")
    if isinstance(concurrency_key, int) and not isinstance(concurrency_key, bool):
        concurrency_key = str(concurrency_key)  # as the official schema: a number is taken as its text
    return TriggerOptions(
        tags=tags,
        idempotency_key=key,
        idempotency_key_ttl=key_ttl,
        metadata=metadata,
        is_test=options.get("test") is True,
        request_key=request_key,
        max_attempts=max_attempts,
        delay=delay,
        ttl=ttl,
        debounce=from_official(options.get("debounce")),
        queue=None if options.get("queue") is None else {"name": queue_name, "concurrency_limit": queue_limit},
        concurrency_key=check_concurrency_key(concurrency_key, "options.concurrencyKey"),
        priority=check_priority(options.get("priority"), "options.priority"),
        max_duration=check_max_duration(options.get("maxDuration"), "options.maxDuration"),
    )


def claims_headers(scopes: list[str], token: str) -> dict[str, str]:
    claims = {"sub": TOKEN_CLAIMS_SUBJECT, "pub": True, "scopes": scopes}
    return {"x-trigger-jwt": token, "x-trigger-jwt-claims": orjson.dumps(claims).decode()}


@handles_errors
async def trigger_task(request: Request) -> Response:
    bridge = bridge_of(request)
    task_id = request.path_params["task_id"]
    principal = principal_of(request)
    principal.require_any("trigger", [("tasks", task_id)])
    body = await read_json_object(request, bridge.settings.limits.max_request_bytes)
    options = body.get("options") or {}
    payload = decode_payload(body.get("payload"), options.get("payloadType") if isinstance(options, dict) else None)
    trigger_options = parse_trigger_options(
        options, request.headers.get("x-trigger-request-idempotency-key"), bridge.settings.limits.max_attempts
    )
    run, created = await trigger_as(bridge.engine, principal, task_id, payload, trigger_options)
    scopes = [f"read:runs:{run.id}", f"write:inputStreams:{run.id}"]
    headers = claims_headers(scopes, run_access_token(bridge.settings.secret_key, run.id))
    return json_response(
        {"id": run.id, "isCached": not created and trigger_options.idempotency_key is not None}, headers=headers
    )


@handles_errors
async def create_batch(request: Request) -> Response:
    """Phase one of the official two-phase batch (`bridge.runtime.batches`): a batch id; items follow."""
    bridge = bridge_of(request)
    principal = principal_of(request)
    principal.require_some("batchTrigger", "tasks")  # also when no taskIdentifiers name what it may trigger
    body = await read_json_object(request, bridge.settings.limits.max_request_bytes)
    refuse_unsupported_batch(body)
    run_count = bridge.batches.check_run_count(body.get("runCount"))
    task_ids = body.get("taskIdentifiers") or []
    if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
        raise ValidationError("taskIdentifiers must be a list of strings")
    for task_id in task_ids:
        principal.require_any("batchTrigger", [("tasks", task_id)])
    batch_id = await bridge.batches.create(run_count)
    scopes = [f"read:batch:{batch_id}"]
    token = create_public_token(bridge.settings.secret_key, scopes, "1h")
    return json_response(
        {"id": batch_id, "runCount": run_count, "isCached": False},
        status=202,
        headers=claims_headers(scopes, token),
    )


@handles_errors
async def add_batch_items(request: Request) -> Response:
    """Phase two: NDJSON items (`{"index", "task", "payload", "options"}`), deduplicated by index; the answer
    lists each item's run (`runs`), which the Python SDK's `batch_trigger` hands back."""
    bridge = bridge_of(request)
    principal = principal_of(request)
    principal.require_some("batchTrigger", "tasks")  # also for a body without items
    batch_id = request.path_params["batch_id"]
    run_count = await bridge.batches.run_count(batch_id)
    body = await read_body(request, bridge.settings.limits.max_request_bytes)
    items: list[BatchItem] = []
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
        if not is_item_index(index, run_count):
            raise ValidationError(f"line {number}: index must be an integer from 0 to runCount - 1 ({run_count - 1})")
        options = item.get("options") or {}
        payload = decode_payload(item.get("payload"), options.get("payloadType") if isinstance(options, dict) else None)
        principal.require_any("batchTrigger", [("tasks", item["task"])])
        items.append(
            BatchItem(
                index, item["task"], payload, parse_trigger_options(options, None, bridge.settings.limits.max_attempts)
            )
        )
    added = await bridge.batches.add_items(batch_id, items)
    return json_response(
        {
            "id": batch_id,
            "itemsAccepted": added.accepted,
            "itemsDeduplicated": added.deduplicated,
            "sealed": True,
            "runs": [run.to_public() for run in added.runs],  # the bridge's addition: official clients ignore it
        }
    )


def retrieve_run_body(run: Run, packets: Packets) -> dict[str, Any]:
    """`GET /api/v3/runs/{id}` as the official schema wants it: absent fields omitted, never null; a packet
    as its presigned URL (`payloadPresignedUrl`, which the official `runs.retrieve` reads)."""
    status = run.status
    completed = status in _RETRIEVE_COMPLETED
    body: dict[str, Any] = {
        "id": run.id,
        "status": status.value,
        "taskIdentifier": run.task_identifier,
        "isQueued": status in (RunStatus.QUEUED, RunStatus.DELAYED),
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
        "depth": run.depth,
        "triggerFunction": _trigger_function(run),
        "relatedRuns": {},
        "metadata": run.metadata,
        # As the official service: the current attempt's number (0 before the first), and `attempts`
        # always empty (it dropped the per-attempt list from the API).
        "attemptCount": run.attempt_number,
        "attempts": [],
    }
    public = run.to_public()
    succeeded = status is RunStatus.COMPLETED
    optional = {
        "idempotencyKey": run.idempotency_key,
        "batchId": run.batch_id,
        "startedAt": public["startedAt"],
        "finishedAt": public["finishedAt"],
        "delayedUntil": iso_from_ms(run.delay_until),
        "ttl": run.ttl,
        "expiredAt": iso_from_ms(run.expired_at),
        "payloadPresignedUrl": packets.presigned_url("GET", run.payload_packet) if run.payload_packet else None,
        "output": run.output if succeeded else None,
        "outputPresignedUrl": packets.presigned_url("GET", run.output_packet)
        if succeeded and run.output_packet
        else None,
        "error": run.error.to_dict() if run.error else None,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if not run.payload_packet:
        body["payload"] = run.payload
    return body


def _trigger_function(run: Run) -> str:
    waited = "AndWait" if run.resumes is not None else ""
    return f"batchTrigger{waited}" if run.batch_id else f"trigger{waited}"


@handles_errors
async def retrieve_run(request: Request) -> Response:
    bridge = bridge_of(request)
    principal = principal_of(request)
    run = await bridge.engine.retrieve(request.path_params["run_id"])
    require_run_read(principal, run)
    packets = bridge.engine.packets
    body = retrieve_run_body(run, packets)
    for relation, related_id in (("parent", run.parent_task_run_id), ("root", run.root_task_run_id)):
        with contextlib.suppress(NotFoundError):  # expired with the retention
            if related_id is not None:
                body["relatedRuns"][relation] = related_run_details(await bridge.engine.retrieve(related_id), packets)
    return json_response(body)


def related_run_details(run: Run, packets: Packets) -> dict[str, Any]:
    """The official `RelatedRunDetails` of a child's parent or root: the retrieve shape without the data."""
    omitted = {"payload", "output", "error", "relatedRuns", "attemptCount", "attempts"}
    return {key: value for key, value in retrieve_run_body(run, packets).items() if key not in omitted}


@handles_errors
async def cancel_run(request: Request) -> Response:
    bridge = bridge_of(request)
    principal = principal_of(request)
    run = await bridge.engine.retrieve(request.path_params["run_id"])
    principal.require_any("write", [("runs", run.id), ("tasks", run.task_identifier)])
    await bridge.engine.cancel(run.id)
    return json_response({"id": run.id})


@handles_errors
async def reschedule_run(request: Request) -> Response:
    """`runs.reschedule(id, {delay})`: a DELAYED run starts at the new moment; 400 for another run, as the
    official API. The answer is the run as `GET /api/v3/runs/{id}` gives it."""
    bridge = bridge_of(request)
    principal = principal_of(request)
    run = await bridge.engine.retrieve(request.path_params["run_id"])
    principal.require_any("write", [("runs", run.id), ("tasks", run.task_identifier)])
    body = await read_json_object(request, bridge.settings.limits.max_request_bytes)
    delay = body.get("delay")
    if not isinstance(delay, str) or not delay:
        raise ValidationError('delay is a duration like "1h" or an ISO date')
    rescheduled = await bridge.engine.reschedule(run.id, delay)
    return json_response(retrieve_run_body(rescheduled, bridge.engine.packets))


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
