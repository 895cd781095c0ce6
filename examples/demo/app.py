"""The demo server: the bridge, a small "your backend" under /demo/api/, and the demo page at /.

    python -m examples.demo          # http://127.0.0.1:8787

One process on the in-memory backend (or Redis, with BRIDGE_REDIS_URL) serves three things:

- the bridge itself (`create_app`: /ws, the official /realtime and /api routes, /healthz), with a
  worker running the tasks of examples/demo/tasks.py;
- the routes a real application would have in its own backend: trigger a task with the Python
  SDK and hand the page the run's public access token, mint a token that reads runs by tag, mint
  a one-time token that lets the browser trigger a task itself, hand a reviewer the access that
  completes a review run's wait token;
- the built web app (examples/demo/web/dist), which talks to both.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from bridge import auth, runs, tasks, wait
from bridge.config import Settings
from bridge.errors import ConflictError, NotFoundError, ValidationError
from bridge.server.app import create_app
from bridge.server.http import handles_errors, json_response, read_json_object
from bridge.worker.registry import default_registry
from examples.demo import tasks as _demo_tasks  # noqa: F401 - registers the demo's @task functions

log = logging.getLogger("demo")

WEB_DIST = Path(__file__).parent / "web" / "dist"
DEMO_TAG = "demo"  # every run the demo triggers carries it; the dashboard follows it
MAX_BODY_BYTES = 64 * 1024
MAX_BATCH = 20
TOKEN_EXPIRATION = "1h"


def _task_id(value: Any) -> str:
    """Only the demo's own tasks may be triggered through the demo's backend."""
    if not isinstance(value, str) or default_registry.get(value) is None:
        raise ValidationError(f"task must be one of {', '.join(default_registry.ids)}")
    return value


def _demo_tag(value: Any) -> str:
    """`demo`, or a sub-tag `demo:<name>`: the page may only read (and add) the demo's own tags."""
    if not isinstance(value, str) or not (value == DEMO_TAG or value.startswith(DEMO_TAG + ":")):
        raise ValidationError(f"tag must be {DEMO_TAG!r} or start with {DEMO_TAG + ':'!r}")
    return value


def _tags(value: Any) -> list[str]:
    if value is None:
        return [DEMO_TAG]
    if not isinstance(value, list):
        raise ValidationError("tags must be a list")
    return list(dict.fromkeys([DEMO_TAG, *(_demo_tag(tag) for tag in value)]))


@handles_errors
async def trigger_run(request: Request) -> Response:
    """`POST /demo/api/runs {task, payload, tags}` -> `{runId, publicAccessToken}`."""
    body = await read_json_object(request, MAX_BODY_BYTES)
    handle = await tasks.trigger(_task_id(body.get("task")), body.get("payload") or {}, tags=_tags(body.get("tags")))
    return json_response(
        {"runId": handle.id, "taskIdentifier": handle.task_identifier, "publicAccessToken": handle.public_access_token}
    )


@handles_errors
async def trigger_batch(request: Request) -> Response:
    """`POST /demo/api/batches {task, payloads: [...], tags}` -> `{batchId, publicAccessToken, runs}`."""
    body = await read_json_object(request, MAX_BODY_BYTES)
    task_id = _task_id(body.get("task"))
    payloads = body.get("payloads")
    if not isinstance(payloads, list) or not 1 <= len(payloads) <= MAX_BATCH:
        raise ValidationError(f"payloads must be a list of 1 to {MAX_BATCH} payloads")
    tags = _tags(body.get("tags"))
    batch = await tasks.batch_trigger(task_id, [{"payload": p or {}, "options": {"tags": tags}} for p in payloads])
    return json_response(
        {
            "batchId": batch.batch_id,
            "publicAccessToken": batch.public_access_token,
            "runs": [{"runId": run.id, "publicAccessToken": run.public_access_token} for run in batch.runs],
        }
    )


@handles_errors
async def cancel_run(request: Request) -> Response:
    """`POST /demo/api/runs/{run_id}/cancel`: a real backend would first check the run is the user's."""
    run = await runs.cancel(request.path_params["run_id"])
    return json_response({"runId": run.id, "status": run.status.value})


@handles_errors
async def review_access(request: Request) -> Response:
    """`POST /demo/api/runs/{run_id}/review-access` -> `{tokenId, accessToken, callbackUrl}`: what a
    reviewer needs to complete the wait token a `review` run waits on. Your backend decides who may
    review (the demo lets anyone); the access token completes that one token only.

    404 when the run is unknown or not a `review` run; 409 when it has not created its token (yet)."""
    run_id = request.path_params["run_id"]
    run = await runs.retrieve(run_id)
    if run.task_identifier != "review":
        raise NotFoundError(f"run {run_id} is not a review run")
    token_id = run.metadata.get("tokenId")
    if not isinstance(token_id, str) or not token_id:
        if run.status.is_final:
            raise ConflictError(f"run {run_id} ended ({run.status.value}) without creating a wait token")
        raise ConflictError(f"run {run_id} has not created its wait token yet; retry once it is WAITING")
    token = await wait.retrieve_token(token_id)
    access = auth.create_public_token(scopes={"write": {"waitpoints": [token.id]}}, expiration_time=TOKEN_EXPIRATION)
    return json_response(
        {"tokenId": token.id, "accessToken": access, "callbackUrl": token.url, "tokenStatus": token.status.value}
    )


@handles_errors
async def tags_token(request: Request) -> Response:
    """`GET /demo/api/tokens/tags?tag=demo` -> a token that reads the runs with that tag, for the dashboard."""
    tag = _demo_tag(request.query_params.get("tag", DEMO_TAG))
    token = auth.create_public_token(scopes={"read": {"tags": [tag]}}, expiration_time=TOKEN_EXPIRATION)
    return json_response({"token": token, "tag": tag})


@handles_errors
async def trigger_token(request: Request) -> Response:
    """`GET /demo/api/tokens/trigger?task=draft-email` -> a one-time token the browser triggers the task with."""
    task_id = _task_id(request.query_params.get("task"))
    token = auth.create_trigger_public_token(task_id, expiration_time="15m")
    return json_response({"token": token, "task": task_id})


async def web_app_missing(request: Request) -> Response:
    return HTMLResponse(
        "<!doctype html><title>realtime-bridge demo</title><h1>The demo page is not built</h1>"
        "<p>Run <code>bash scripts/run</code> (it builds it), or "
        "<code>cd examples/demo/web &amp;&amp; npm ci &amp;&amp; npm run build</code>.</p>",
        status_code=503,
    )


def demo_routes() -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        Route("/demo/api/runs", trigger_run, methods=["POST"]),
        Route("/demo/api/batches", trigger_batch, methods=["POST"]),
        Route("/demo/api/runs/{run_id}/cancel", cancel_run, methods=["POST"]),
        Route("/demo/api/runs/{run_id}/review-access", review_access, methods=["POST"]),
        Route("/demo/api/tokens/tags", tags_token),
        Route("/demo/api/tokens/trigger", trigger_token),
    ]
    if (WEB_DIST / "index.html").is_file():
        # Last: it answers every path the routes above don't (the page uses hash routing).
        routes.append(Mount("/", app=StaticFiles(directory=WEB_DIST, html=True), name="web"))
    else:
        log.warning("the demo page is not built (no %s): bash scripts/run builds it", WEB_DIST / "index.html")
        routes.append(Route("/", web_app_missing))
    return routes


def create_demo_app(settings: Settings | None = None, *, worker: bool = True) -> Starlette:
    """The bridge with the demo tasks running in-process (unless `worker=False`: then a separate
    `realtime-bridge worker` on the same Redis runs them), plus the demo's backend routes and page."""
    app = create_app(settings or Settings.from_env(), registry=default_registry if worker else None)
    # The bridge's own routes come first; the static mount at "/" must stay last.
    app.router.routes.extend(demo_routes())
    return app
