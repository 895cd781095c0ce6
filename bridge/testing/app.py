"""The app `realtime-bridge testserver` serves: the bridge with a `ManualClock`, holds on `steps.run` and the
test-only API (bridge/testing/api.py), which drives it through a `BridgeServer`."""

from __future__ import annotations

from starlette.applications import Starlette

import bridge.steps
from bridge.config import Settings
from bridge.server.app import create_app
from bridge.testing import api
from bridge.testing.clock import ManualClock
from bridge.testing.holds import Holds
from bridge.testing.server import BridgeServer
from bridge.worker.registry import TaskRegistry


def test_app(settings: Settings, registry: TaskRegistry) -> Starlette:
    """`settings.public_url` is where it is served: the `url` the test API's controls report."""
    clock = ManualClock()
    holds = Holds()
    # For the life of the process, which serves nothing but tests (the pytest plugin patches per test).
    bridge.steps.run = holds.wrap(bridge.steps.run)  # type: ignore[assignment]
    app = create_app(settings, registry=registry, clock=clock, extra_routes=api.routes)
    app.state.test_server = BridgeServer(settings.public_url, settings.secret_key, app.state.bridge, clock, holds)
    return app
