"""The official input-stream route: `POST /realtime/v1/streams/{runId}/input/{streamId}`.

Body `{"data": <any JSON value>}` (plain JSON, as the official SDK and `useInputStreamSend` send
it). Answered `{"ok": true}` only once the value is stored. Statuses and bodies follow the
official service: 401 bad token, 403 without `write:inputStreams:{runId}`, 413 for a body over
1 MiB or without Content-Length (chunked uploads are refused), 400 for an invalid body, 404
`{"ok": false, "error": "Run not found"}`, 400 `{"ok": false, "error": "Cannot send to input
stream on a completed run"}`.

The official SDK sends every request with an `x-trigger-request-idempotency-key` header (a UUID per
call, the same on its retries): honoured here as the send's idempotency key, so a retried send is
stored once and answered `{"ok": true}` again (also once the run finished). A key over 2,048
characters is 400 `{"ok": false, ...}`; an empty header is no key.
"""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from bridge.errors import NotFoundError, PayloadTooLargeError, RunFinishedError, ValidationError
from bridge.runtime.input_streams import send_input
from bridge.server.http import bridge_of, error_response, handles_errors, json_response, principal_of, read_body

MAX_INPUT_BODY_BYTES = 1024 * 1024  # the official route's limit on the whole body
RUN_NOT_FOUND = "Run not found"
RUN_FINISHED = "Cannot send to input stream on a completed run"
IDEMPOTENCY_HEADER = "x-trigger-request-idempotency-key"  # what the official SDK sends on every request


@handles_errors
async def send_input_stream(request: Request) -> Response:
    bridge = bridge_of(request)
    principal = principal_of(request)  # 401
    run_id = request.path_params["run_id"]
    principal.require_any("write", [("inputStreams", run_id)])  # 403
    if request.headers.get("content-length") is None:
        # The official service needs the length up front; a chunked body is refused, not read.
        raise PayloadTooLargeError("Request body too large")
    body = await read_body(request, MAX_INPUT_BODY_BYTES)  # 413 over 1 MiB
    try:
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise ValidationError("Invalid request body: not valid JSON") from exc
        if not isinstance(parsed, dict) or "data" not in parsed:
            raise ValidationError('Invalid request body: expected {"data": ...}')
        key = request.headers.get(IDEMPOTENCY_HEADER) or None
        await send_input(bridge.engine, run_id, request.path_params["stream_id"], parsed["data"], key)
    except NotFoundError:
        return error_response(NotFoundError(RUN_NOT_FOUND), ok=False)
    except RunFinishedError:
        return error_response(RunFinishedError(RUN_FINISHED), ok=False)
    except ValidationError as error:
        return error_response(error, ok=False)
    return json_response({"ok": True})
