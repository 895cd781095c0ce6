"""Shared HTTP plumbing: JSON responses, bounded body reading, authentication, error mapping."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from bridge.errors import (
    BackendUnavailableError,
    BridgeError,
    ClientGoneError,
    ForbiddenError,
    OptionError,
    PayloadTooLargeError,
    ValidationError,
)
from bridge.runtime.access import Principal, authenticate, bearer_from_header
from bridge.runtime.core import Bridge

log = logging.getLogger(__name__)

Endpoint = Callable[[Request], Awaitable[Response]]


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def error_response(error: BridgeError, **extra: Any) -> Response:
    if isinstance(error, ForbiddenError):
        # The official body for a token without the scope (the SDK's ApiError exposes code/param/type).
        extra = {"code": "unauthorized", "param": "access_token", "type": "authorization", **extra}
    if isinstance(error, OptionError):
        extra = {"field": error.field, **extra}
    return json_response({"error": error.message, "code": error.code, **extra}, status=error.status)


def bridge_of(request: Request) -> Bridge:
    bridge: Bridge = request.app.state.bridge
    return bridge


def principal_of(request: Request) -> Principal:
    return authenticate(
        bridge_of(request).settings.secret_key, bearer_from_header(request.headers.get("authorization"))
    )


MAX_HEADER_INTEGER = 2**53 - 1  # the largest integer every JSON client (JavaScript) holds exactly


def parse_bounded_int(raw: str, what: str, low: int, high: int) -> int:
    """`raw` as an integer from `low` to `high`, else ValidationError (400) naming `what`.

    Only ASCII digits (with a leading "-" when `low` < 0): `str.isdigit` also accepts "²", which `int`
    refuses, and `int` accepts "٣" and "1_0". The length is checked before converting, so thousands of
    digits cost nothing (and never hit Python's int-conversion limit)."""
    digits = raw[1:] if raw.startswith("-") and low < 0 else raw
    if (
        not digits.isascii()
        or not digits.isdigit()
        or len(digits) > len(str(max(abs(low), abs(high))))
        or not low <= int(raw) <= high
    ):
        raise ValidationError(f"{what} must be a whole number from {low} to {high}")
    return int(raw)


def header_int(request: Request, name: str, low: int, high: int) -> int | None:
    """The header `name` as a bounded integer (see `parse_bounded_int`); None when absent."""
    raw = request.headers.get(name)
    return None if raw is None else parse_bounded_int(raw, name, low, high)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 past `limit` bytes whether or not Content-Length tells the truth."""
    declared = header_int(request, "Content-Length", 0, MAX_HEADER_INTEGER)
    if declared is not None and declared > limit:
        raise PayloadTooLargeError("Request body too large")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError("Request body too large")
            chunks.append(chunk)
    except ClientDisconnect as exc:
        # Ends this request like any refused one (the answer goes nowhere), not as our bug with a traceback.
        raise ClientGoneError("the client closed the connection before the body was complete") from exc
    return b"".join(chunks)


async def read_json_object(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    try:
        data = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"the body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValidationError("the body must be a JSON object")
    return data


def handles_errors(endpoint: Endpoint) -> Endpoint:
    """Maps BridgeError to its JSON status, and a backend outage to 503; anything else is our bug (500, logged)."""

    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except BridgeError as error:
            return error_response(error)
        except (ConnectionError, OSError, TimeoutError) as exc:
            log.warning("backend unavailable: %s", exc)
            return error_response(BackendUnavailableError("the bridge's backend is unavailable; retry shortly"))

    return wrapped
