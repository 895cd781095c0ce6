"""The bridge mounted in a user's app: examples/fastapi_app and examples/django_app, each served as its
README says (`uvicorn <module>:<app>`, a subprocess on a free port, the in-memory backend).

The app's own route triggers with the SDK in the app's process; a WebSocket client on the mounted
/realtime/ws and the official useRealtimeRun hook (baseURL: the mount's URL) see the run complete;
the wait token's callback URL points under the mount and completes the token.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx
import orjson
import pytest
from websockets.exceptions import InvalidStatus

from bridge.asgi import NOT_STARTED, BridgeApp
from bridge.config import Settings
from tests.conftest import suite_settings
from tests.support.helpers import TIMEOUT
from tests.support.official_client import run_script
from tests.support.processes import serving_app
from tests.support.ws_client import connect, of_type, on_topic, runs_in

EXAMPLES = {"fastapi": "examples.fastapi_app.app:app", "django": "examples.django_app.asgi:application"}
TEXT = "The bridge gives Python background tasks a live connection to React pages, mounted in the app that starts them."
SUMMARY = "The bridge gives Python background tasks a live connection to React pages,"


@dataclass
class MountedBridge:  # the official scripts' baseURL: the mount, not the app's root
    url: str
    settings: Settings


@pytest.mark.parametrize("example", sorted(EXAMPLES))
async def test_the_apps_route_triggers_a_run_that_the_page_watches_through_the_mount(example: str) -> None:
    async with serving_app(EXAMPLES[example]) as app, httpx.AsyncClient(base_url=app.url, timeout=TIMEOUT) as http:
        started = (await http.post("/api/summarize", json={"text": TEXT})).raise_for_status().json()
        run_id, token = started["runId"], started["publicAccessToken"]
        official = asyncio.create_task(
            run_script(MountedBridge(app.bridge_url, app.settings), "watch-run.mjs", run_id, token)
        )
        topic = f"run:{run_id}"
        async with connect(app.bridge_url.replace("http://", "ws://") + "/ws") as client:
            await client.subscribe_run("s1", run_id, token)
            await client.expect(on_topic(topic, lambda run: run["status"] == "WAITING"))
            assert started["approvalUrl"].startswith(f"{app.bridge_url}/api/v1/waitpoints/tokens/")
            (await http.post(started["approvalUrl"], json={"approved": True})).raise_for_status()
            (run,) = runs_in(await client.expect(on_topic(topic, lambda run: run["status"] == "COMPLETED")))
            assert run["metadata"] == {"summary": SUMMARY, "step": "done"}
            assert run["output"] == {"summary": SUMMARY, "approved": True}

            # The frame bound holds under the app's server too (uvicorn's own default is 16 MiB).
            assert client.welcome is not None
            limit = client.welcome["limits"]["maxFrameBytes"]
            empty = len(orjson.dumps({"type": "ping", "id": "over", "pad": ""}))
            await client.send({"type": "ping", "id": "over", "pad": "x" * (limit - empty + 1)})
            _, close = await client.drain_until_closed()
            assert close is not None and close.code == 1009

        watched = await official
        assert watched.ok, watched.explain()
        assert watched["onCompleteCount"] == 1 and watched["feedRequestsAfterComplete"] == 0
        assert watched["run"]["status"] == "COMPLETED"
        assert watched["run"]["metadata"] == run["metadata"] and watched["run"]["output"] == run["output"]
        paths = [request["path"] for request in watched["requests"]]
        assert paths and all(path.startswith(f"/realtime/realtime/v1/runs/{run_id}?") for path in paths), paths
    assert "BRIDGE_PUBLIC_URL" not in app.stderr and "Traceback" not in app.stderr, app.stderr


async def test_a_mount_without_the_bridges_lifespan_or_public_url_says_so() -> None:
    async with (
        serving_app(EXAMPLES["fastapi"], "--lifespan", "off", public_url=False) as app,
        httpx.AsyncClient(base_url=app.url, timeout=TIMEOUT) as http,
    ):
        response = await http.get("/realtime/healthz")
        assert response.status_code == 503
        assert response.json() == {"error": NOT_STARTED, "code": "not_started"}
        with pytest.raises(InvalidStatus) as refused:
            async with connect(app.bridge_url.replace("http://", "ws://") + "/ws", welcome=False):
                pass
        assert refused.value.response.status_code == 403
    assert app.stderr.count(NOT_STARTED) == 1, app.stderr  # logged once, not per request
    assert "mounted at '/realtime' but BRIDGE_PUBLIC_URL (settings.public_url) is http://127.0.0.1:8787" in app.stderr


def test_a_mounted_bridge_without_a_worker_needs_redis() -> None:
    with pytest.raises(ValueError, match="worker=False needs Redis"):
        BridgeApp(settings=suite_settings(), worker=False)


async def test_the_bridge_app_serves_on_its_own_too() -> None:
    """`uvicorn --factory bridge.asgi:BridgeApp`: not mounted, the server runs its lifespan itself."""
    async with serving_app("bridge.asgi:BridgeApp", "--factory", public_url=False) as app:
        async with httpx.AsyncClient(base_url=app.url, timeout=TIMEOUT) as http:
            health = (await http.get("/healthz")).json()
            assert health["ok"] is True and isinstance(health["pid"], int), health
        async with connect(app.url.replace("http://", "ws://") + "/ws") as client:
            await client.send({"type": "ping", "id": "p"})
            await client.expect(of_type("pong", "p"))
    assert "WARNING" not in app.stderr and "ERROR" not in app.stderr, app.stderr
