"""`/healthz` (the process is up) and `/readyz` (it can reach its backend)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bridge.errors import BridgeError
from bridge.server.http import bridge_of, json_response


async def healthz(request: Request) -> Response:
    return json_response({"ok": True})


async def readyz(request: Request) -> Response:
    try:
        await bridge_of(request).broker.ping()
    except BridgeError as error:
        return json_response({"ok": False, "error": error.message}, status=503)
    return json_response({"ok": True})
