"""`GET /metrics` in the Prometheus text format, and the count of HTTP requests by route (docs/observability.md).

`/metrics` is open, as Prometheus exporters are, unless `BRIDGE_METRICS_TOKEN` is set: then a scrape must
carry it as a Bearer token. What only the backend knows (queue depths, waiting wait tokens) is read for
each scrape, within BACKEND_READ_SECONDS; should that fail, those gauges are left out of this scrape and
everything else is served.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from collections.abc import Mapping

from prometheus_client import Counter
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.errors import BridgeError, UnauthorizedError
from bridge.runtime.access import bearer_from_header
from bridge.server.http import bridge_of, handles_errors

log = logging.getLogger(__name__)

BACKEND_READ_SECONDS = 2.0  # a scrape waits this long for the backend's gauges (Prometheus' timeout: 10 s)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"  # the route label of a request no route matched: its path never becomes a label


@handles_errors
async def metrics(request: Request) -> Response:
    bridge = bridge_of(request)
    token = bridge.settings.metrics_token
    presented = bearer_from_header(request.headers.get("authorization")) or ""
    # Compared as bytes: compare_digest refuses str with non-ASCII characters, which a header may carry.
    if token is not None and not hmac.compare_digest(presented.encode(), token.encode()):
        raise UnauthorizedError("/metrics wants the metrics token (BRIDGE_METRICS_TOKEN) as a Bearer token")
    try:
        async with asyncio.timeout(BACKEND_READ_SECONDS):
            await bridge.read_backend_gauges()
    except (BridgeError, TimeoutError) as exc:
        log.debug("metrics: the backend's gauges are left out of this scrape: %s", exc)
    # The text format, or OpenMetrics when the scraper asks for it (Prometheus does).
    encode, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(bridge.metrics.registry), headers={"content-type": content_type})


class CountRequests:
    """ASGI middleware: each HTTP request, once answered, counted by route template (the path holds ids),
    method and status class. `templates` maps each route's endpoint, which the router puts in the scope,
    to its path template."""

    def __init__(self, app: ASGIApp, requests: Counter, templates: Mapping[object, str]) -> None:
        self.app = app
        self.requests = requests
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app fails before it answered

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = self.templates.get(scope.get("endpoint"), UNMATCHED)
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.requests.labels(route, method, f"{status // 100}xx").inc()
