"""The official Trigger.dev HTTP protocol, so unmodified official clients work against the bridge."""

from __future__ import annotations

from starlette.routing import BaseRoute

routes: list[BaseRoute] = []
