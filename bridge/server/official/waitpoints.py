"""The official wait token routes, so the Node SDK's `wait.*` and the official `useWaitToken` work.

- `POST /api/v1/waitpoints/tokens` creates (`write:waitpoints`, or the secret key): `{id, isCached,
  url}` and the token's public access token in `x-trigger-jwt` (`write:waitpoints:<id>`, 24 h).
- `POST /api/v1/waitpoints/tokens/{id}/complete` with `{"data": ...}`: `{"success": true}`, also
  when the token was done already (its first output stays). A body with fields but no `data` is
  refused with 400: the official service silently completes `{"output": ...}` with nothing. `{}`
  (what the official clients send for `complete(undefined)`) completes with `null`.
- `GET /api/v1/waitpoints/tokens/{id}`: the official retrieve shape; `output` is JSON text.
- `POST /api/v1/waitpoints/tokens/{id}/callback/{hmac}`: completes with the raw JSON body; no
  authentication but the URL's signature (401 when wrong), 411 without Content-Length.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from bridge.errors import LengthRequiredError, UnauthorizedError, UnprocessableError, ValidationError
from bridge.models import iso_from_ms
from bridge.runtime.access import waitpoint_access_token
from bridge.runtime.core import Bridge
from bridge.runtime.engine import MAX_IDEMPOTENCY_KEY_LENGTH
from bridge.runtime.waitpoints import TokenStatus, WaitToken, valid_callback_signature
from bridge.server.http import bridge_of, handles_errors, json_response, principal_of, read_body, read_json_object
from bridge.server.official.api import claims_headers

MAX_CREATE_BODY_BYTES = 10 * 1024  # as the official route
NO_DATA_MESSAGE = (
    'Invalid request body: send {"data": <the output>}; the body has fields but no "data" field, so '
    "the token would be completed with nothing"
)


def retrieve_token_body(bridge: Bridge, token: WaitToken) -> dict[str, Any]:
    """The official `WaitpointRetrieveTokenResponse`: absent fields omitted, output as JSON text."""
    body: dict[str, Any] = {
        "id": token.id,
        "url": bridge.waitpoints.callback_url(token.id),
        "status": token.status.value,
        "tags": token.tags,
        "createdAt": iso_from_ms(token.created_at),
    }
    optional = {
        "timeoutAt": iso_from_ms(token.timeout_at),
        "completedAt": iso_from_ms(token.completed_at),
        "idempotencyKey": token.idempotency_key,
        "idempotencyKeyExpiresAt": iso_from_ms(token.idempotency_key_expires_at),
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    if token.is_done:
        body["output"] = orjson.dumps(token.output).decode()
        body["outputType"] = "application/json"
        body["outputIsError"] = token.status is TokenStatus.TIMED_OUT
    return body


@handles_errors
async def create_token(request: Request) -> Response:
    bridge = bridge_of(request)
    principal_of(request).require_any("write", [("waitpoints", None)])
    body = await read_json_object(request, MAX_CREATE_BODY_BYTES)
    key, key_ttl = body.get("idempotencyKey"), body.get("idempotencyKeyTTL")
    timeout, tags = body.get("timeout"), body.get("tags")
    # Wrong types are 400, as the official request schema; wrong values below are 422, as its service.
    if key is not None and (not isinstance(key, str) or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH):
        raise ValidationError(f"idempotencyKey must be a string of at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    if key_ttl is not None and not isinstance(key_ttl, str):
        raise ValidationError('idempotencyKeyTTL must be a duration like "1h"')
    if timeout is not None and not isinstance(timeout, str):
        raise ValidationError('timeout must be a duration like "10m" or an ISO date')
    if tags is not None and not (
        isinstance(tags, str) or (isinstance(tags, list) and all(isinstance(t, str) for t in tags))
    ):
        raise ValidationError("tags must be a string or a list of strings")
    try:
        token, created = await bridge.waitpoints.create(
            timeout=timeout, idempotency_key=key, idempotency_key_ttl=key_ttl, tags=tags
        )
    except ValidationError as error:
        raise UnprocessableError(error.message) from error
    scopes = [f"write:waitpoints:{token.id}"]
    headers = claims_headers(scopes, waitpoint_access_token(bridge.settings.secret_key, token.id))
    return json_response(
        {"id": token.id, "isCached": not created, "url": bridge.waitpoints.callback_url(token.id)}, headers=headers
    )


@handles_errors
async def complete_token(request: Request) -> Response:
    bridge = bridge_of(request)
    token_id = request.path_params["token_id"]
    principal_of(request).require_any("write", [("waitpoints", token_id)])
    body = await read_json_object(request, bridge.settings.limits.max_request_bytes)
    if "data" not in body and body:  # {} is what the official clients send for `complete(undefined)`
        raise ValidationError(NO_DATA_MESSAGE)
    await bridge.waitpoints.complete(token_id, body.get("data"))
    return json_response({"success": True})


@handles_errors
async def retrieve_token(request: Request) -> Response:
    bridge = bridge_of(request)
    token_id = request.path_params["token_id"]
    principal = principal_of(request)
    if not principal.allows("write", "waitpoints", token_id):  # who may complete a token may read it
        principal.require_any("read", [("waitpoints", token_id)])
    return json_response(retrieve_token_body(bridge, await bridge.waitpoints.retrieve(token_id)))


@handles_errors
async def complete_by_callback(request: Request) -> Response:
    bridge = bridge_of(request)
    token_id = request.path_params["token_id"]
    if request.headers.get("content-length") is None:
        raise LengthRequiredError("Content-Length header is required")
    if not valid_callback_signature(bridge.settings.secret_key, token_id, request.path_params["signature"]):
        raise UnauthorizedError("Invalid URL, hash doesn't match")
    raw = await read_body(request, bridge.settings.limits.max_request_bytes)
    try:
        data = orjson.loads(raw) if raw.strip() else None
    except orjson.JSONDecodeError as exc:
        raise ValidationError("the callback body must be JSON (it becomes the token's output)") from exc
    await bridge.waitpoints.complete(token_id, data)
    return json_response({"success": True})
