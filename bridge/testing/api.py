"""The test-only HTTP API under `/_test/`, served by `realtime-bridge testserver` alone (never by `serve`):
the `BridgeServer` controls for a test written in another language (the Playwright helper in js-hooks).

Every route wants the test server's secret key as a Bearer token and answers JSON; a bad body or query
is a 400 naming the field, like the bridge's other routes.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.errors import UnauthorizedError, ValidationError
from bridge.models import RunStatus
from bridge.runtime.access import run_access_token
from bridge.server.http import (
    Endpoint,
    handles_errors,
    json_response,
    parse_bounded_int,
    principal_of,
    read_json_object,
)
from bridge.server.official.api import parse_trigger_options
from bridge.testing.server import BridgeServer

MAX_WAIT_SECONDS = 60  # GET /_test/runs/{id}/wait holds a request at most this long


def _server(request: Request) -> BridgeServer:
    if not principal_of(request).is_backend:
        raise UnauthorizedError("the test API wants the test server's secret key")
    server: BridgeServer = request.app.state.test_server
    return server


async def _body(request: Request, server: BridgeServer) -> dict[str, Any]:
    return await read_json_object(request, server.bridge.settings.limits.max_request_bytes)


def _string(body: dict[str, Any], field: str) -> str:
    value = body.get(field)
    if not isinstance(value, str) or not value:
        raise ValidationError(f"{field} must be a non-empty string")
    return value


def _required(body: dict[str, Any], field: str) -> Any:
    if field not in body:
        raise ValidationError(f"the body needs {field!r}")
    return body[field]


@handles_errors
async def complete_token(request: Request) -> Response:
    server = _server(request)
    body = await _body(request, server)
    await server.complete_token(request.path_params["token_id"], body.get("data"))
    return json_response({"ok": True})


@handles_errors
async def push_chunk(request: Request) -> Response:
    server = _server(request)
    body = await _body(request, server)
    params = request.path_params
    index = await server.push_chunk(params["run_id"], params["key"], _required(body, "chunk"))
    return json_response({"index": index})


@handles_errors
async def set_metadata(request: Request) -> Response:
    server = _server(request)
    body = await _body(request, server)
    return json_response({"metadata": await server.set_metadata(request.path_params["run_id"], **body)})


@handles_errors
async def send_input(request: Request) -> Response:
    server = _server(request)
    body = await _body(request, server)
    params = request.path_params
    await server.send_input(params["run_id"], params["stream_id"], _required(body, "data"))
    return json_response({"ok": True})


@handles_errors
async def advance_clock(request: Request) -> Response:
    server = _server(request)
    duration = _required(await _body(request, server), "duration")
    if not isinstance(duration, (str, int, float)):
        raise ValidationError('duration is a duration like "24h" or seconds')
    server.advance(duration)  # parse_duration_seconds refuses a bad or negative one (400)
    return json_response({"nowMs": server.clock.now_ms()})


@handles_errors
async def wait_for_run(request: Request) -> Response:
    server = _server(request)
    raw_status = request.query_params.get("status", "")
    try:
        status = RunStatus(raw_status)
    except ValueError:
        raise ValidationError(f"status must be one of {', '.join(s.value for s in RunStatus)}") from None
    timeout = parse_bounded_int(request.query_params.get("timeout", "5"), "timeout", 1, MAX_WAIT_SECONDS)
    run_id = request.path_params["run_id"]
    await server.bridge.engine.retrieve(run_id)  # an unknown run is a 404 at once
    try:
        run = await server.run_reaches(run_id, status, timeout=timeout)
    except AssertionError as exc:
        now = await server.bridge.engine.retrieve(run_id)
        return json_response({"error": str(exc), "code": "timeout", "status": now.status.value}, status=408)
    return json_response(run.to_public())


@handles_errors
async def trigger(request: Request) -> Response:
    server = _server(request)
    body = await _body(request, server)
    options = parse_trigger_options(body.get("options"), None, server.bridge.settings.limits.max_attempts)
    run = await server.trigger(_string(body, "task"), body.get("payload"), **asdict(options))
    # what the official trigger hands back: read the run, write its input streams (a page's Stop button)
    return json_response({"id": run.id, "publicToken": run_access_token(server.secret_key, run.id)})


@handles_errors
async def add_hold(request: Request) -> Response:
    server = _server(request)
    step = _string(await _body(request, server), "step")
    server.hold_at(step)
    return json_response({"step": step}, status=201)


@handles_errors
async def hold_reached(request: Request) -> Response:
    """The first run that reached the held step, once one did (408 after `timeout` seconds)."""
    server = _server(request)
    timeout = parse_bounded_int(request.query_params.get("timeout", "5"), "timeout", 1, MAX_WAIT_SECONDS)
    try:
        run_id = await server.hold_at(request.path_params["step"]).reached(timeout)
    except AssertionError as exc:
        return json_response({"error": str(exc), "code": "timeout"}, status=408)
    return json_response({"runId": run_id})


@handles_errors
async def release_hold(request: Request) -> Response:
    server = _server(request)
    server.hold_at(request.path_params["step"]).release()
    return json_response({"ok": True})


def _post(path: str, endpoint: Endpoint) -> Route:
    return Route(path, endpoint, methods=["POST"])


routes = [
    _post("/_test/tokens/{token_id}/complete", complete_token),
    _post("/_test/runs/{run_id}/chunks/{key}", push_chunk),
    _post("/_test/runs/{run_id}/metadata", set_metadata),
    _post("/_test/runs/{run_id}/inputs/{stream_id}", send_input),
    Route("/_test/runs/{run_id}/wait", wait_for_run),
    _post("/_test/clock/advance", advance_clock),
    _post("/_test/triggers", trigger),
    _post("/_test/holds", add_hold),
    Route("/_test/holds/{step}/reached", hold_reached),
    _post("/_test/holds/{step}/release", release_hold),
]
