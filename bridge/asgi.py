"""The bridge inside your own ASGI application (FastAPI, Starlette, Django), in the same process.

    realtime = BridgeApp(tasks=["myapp.tasks"])
    app = FastAPI(lifespan=realtime.lifespan)    # or `async with realtime.lifespan():` in your own lifespan
    app.mount("/realtime", realtime)

Starlette and FastAPI never run a mounted app's lifespan, so the host runs `realtime.lifespan`: it
starts the bridge (and a worker running the registered tasks) and hands it to the SDK, so
`tasks.trigger` in the host's routes uses this bridge. Under the mount every path keeps its name:
`/realtime/ws` for the WebSocket, `baseURL: "http://host/realtime"` for the official hooks (they
add `/realtime/v1/...` themselves). Wait tokens' callback URLs start with `settings.public_url`
(`BRIDGE_PUBLIC_URL`), which must be the mounted URL, e.g. `https://host/realtime`.

Django (its ASGI handler serves neither WebSockets nor the lifespan): `mount(django_app, "/realtime",
realtime)` is the application to serve.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from bridge.cli import warn_if_development_key
from bridge.config import Settings
from bridge.server.app import create_app
from bridge.server.http import json_response
from bridge.worker.registry import default_registry, load_tasks

log = logging.getLogger("bridge")

NOT_STARTED = (
    "the bridge is not started: run its lifespan in your app's (FastAPI(lifespan=realtime.lifespan), "
    "or `async with realtime.lifespan():` inside your own lifespan)"
)


class BridgeApp:
    """The bridge as an ASGI app to mount; `lifespan` starts and stops it.

    `tasks`: modules (`myapp.tasks`) or files (`tasks.py`) to import so their `@task` functions register
    (tasks imported otherwise register too). `settings`: default `Settings.from_env()` (`BRIDGE_*`).
    `worker=False` runs no tasks in this process: with Redis, `realtime-bridge worker` processes do."""

    def __init__(self, *, tasks: Sequence[str] = (), settings: Settings | None = None, worker: bool = True) -> None:
        for spec in tasks:
            load_tasks(spec)
        self.settings = settings or Settings.from_env()
        if not worker and not self.settings.redis_url:
            raise ValueError("worker=False needs Redis: on the in-memory backend only this process can run tasks")
        warn_if_development_key(self.settings)
        self.app = create_app(self.settings, registry=default_registry if worker else None)
        self._mount_checked = False
        self._not_started_logged = False

    @contextlib.asynccontextmanager
    async def lifespan(self, _host: object = None) -> AsyncIterator[None]:
        """Starts the bridge and its worker, stops them on exit. Takes (and ignores) the host app, so it
        can be a host's `lifespan=` as it is."""
        async with self.app.router.lifespan_context(self.app):
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":  # served on its own, not mounted
            await self.app(scope, receive, send)
            return
        if not self._mount_checked:
            self._mount_checked = True
            self._check_public_url(scope.get("root_path", ""))
        if not self.app.state.running:
            if not self._not_started_logged:
                self._not_started_logged = True
                log.error(NOT_STARTED)
            if scope["type"] == "websocket":
                await WebSocket(scope, receive, send).close(1011, "the bridge is not started: run realtime.lifespan")
            else:
                await json_response({"error": NOT_STARTED, "code": "not_started"}, status=503)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _check_public_url(self, mounted_at: str) -> None:
        """Callback URLs are built without a request at hand: say so when they miss the mount."""
        public = self.settings.public_url
        if urlsplit(public).path.rstrip("/") != mounted_at.rstrip("/"):
            log.warning(
                "the bridge is mounted at %r but BRIDGE_PUBLIC_URL (settings.public_url) is %s: wait token "
                "callback URLs will not reach it; set it to the mounted URL, e.g. https://<host>%s",
                mounted_at,
                public,
                mounted_at,
            )


def mount(app: ASGIApp, path: str, realtime: BridgeApp) -> Starlette:
    """`app` (Django's ASGI application, or any without a lifespan of its own) with the bridge at `path`:
    requests under `path` (WebSockets included) go to the bridge, every other one to `app`; the lifespan
    starts the bridge."""
    return Starlette(routes=[Mount(path, app=realtime), Mount("/", app=app)], lifespan=realtime.lifespan)
