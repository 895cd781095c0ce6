"""The Starlette application: routes, CORS, and the lifespan that starts the bridge (and a worker)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from bridge.clock import Clock
from bridge.config import Settings
from bridge.errors import NotFoundError
from bridge.runtime import state
from bridge.runtime.core import Bridge
from bridge.server import official
from bridge.server.health import healthz, readyz
from bridge.server.http import json_response
from bridge.server.metrics import CountRequests, metrics
from bridge.server.official.feeds import FeedSessions
from bridge.server.topics import TopicRouter
from bridge.server.websocket.connection import websocket_endpoint
from bridge.worker.executor import Worker
from bridge.worker.registry import TaskRegistry

ROUTING_ERROR_CODES = {404: NotFoundError.code, 405: "method_not_allowed"}


async def http_error(request: Request, exc: Exception) -> Response:
    """Unknown paths and wrong methods answer JSON like every other error, with a code."""
    assert isinstance(exc, HTTPException)  # the one exception it handles (Starlette's handler type is wider)
    code = ROUTING_ERROR_CODES.get(exc.status_code, "invalid_request")
    return json_response({"error": exc.detail, "code": code}, status=exc.status_code)


EXPOSED_HEADERS = [
    "x-trigger-jwt",
    "x-trigger-jwt-claims",
    "electric-offset",
    "electric-handle",
    "electric-schema",
    "electric-cursor",
    "electric-up-to-date",
    "x-stream-version",
]


def create_app(
    settings: Settings,
    *,
    registry: TaskRegistry | None = None,
    clock: Clock | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The bridge server; with a registry, it also runs those tasks in a worker in this process. `clock`: what
    deadlines are measured on (default: the system's); `extra_routes`: the test-only API of `testserver`."""
    bridge = Bridge(settings, clock)
    feed_sessions = FeedSessions(bridge, settings.limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bridge.start()
        state.use(bridge)
        feed_sessions.start()
        worker = Worker(bridge, registry) if registry is not None else None
        if worker:
            await worker.start()
        app.state.worker = worker
        app.state.running = True
        try:
            yield
        finally:
            app.state.running = False
            if worker:
                # In memory nothing outlives this process: no point letting runs reach their next step.
                await worker.stop(grace=None if settings.redis_url else 0)
            await feed_sessions.stop()
            await bridge.stop()

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        WebSocketRoute("/ws", websocket_endpoint),
        *official.routes,
        *extra_routes,
    ]
    templates: dict[object, str] = {route.endpoint: route.path for route in routes if isinstance(route, Route)}
    middleware = [
        Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "PUT", "OPTIONS"],
            allow_headers=["*"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        ),
        # Inside CORS: preflights the CORS layer answers itself are not counted.
        Middleware(CountRequests, requests=bridge.metrics.http_requests, templates=templates),
    ]
    app = Starlette(
        routes=routes, middleware=middleware, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.bridge = bridge
    app.state.running = False  # True from the end of the lifespan's start to the start of its stop
    app.state.topics = TopicRouter(bridge.hub, bridge.metrics)
    app.state.feed_sessions = feed_sessions
    return app
