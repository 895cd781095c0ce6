"""`/healthz` (the process is up, and which one: its pid) and `/readyz` (it can reach its backend)."""

from __future__ import annotations

import asyncio
import os

from starlette.requests import Request
from starlette.responses import Response

from bridge.errors import BridgeError
from bridge.server.http import bridge_of, json_response

# A probe must get an answer, not hang: a broker call is otherwise bounded only by its own operation
# timeout (10 s with Redis), longer than a probe waits, so a backend that stopped answering (a dead
# network path) would look like a hung process rather than an unready one.
READY_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> Response:
    # the pid: which of several processes on one port (`serve --workers`) answered
    return json_response({"ok": True, "pid": os.getpid()})


async def readyz(request: Request) -> Response:
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            await bridge_of(request).broker.ping()
    except BridgeError as error:
        return json_response({"ok": False, "error": error.message}, status=503)
    except TimeoutError:
        silent = f"the backend did not answer within {READY_TIMEOUT_SECONDS:g} s"
        return json_response({"ok": False, "error": silent}, status=503)
    return json_response({"ok": True})
