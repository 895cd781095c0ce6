"""The process-wide bridge the SDK talks to: set by `configure()`, or handed over with `use()` by the
server or worker the code runs in (they live below the SDK and never import it)."""

from __future__ import annotations

import asyncio

from bridge.config import Settings
from bridge.durations import parse_duration_seconds
from bridge.runtime.core import Bridge

_bridge: Bridge | None = None
_ready = False
_start_lock = asyncio.Lock()


def configure(*, secret_key: str | None = None, redis_url: str | None = None, retention: str | None = None) -> Bridge:
    """Points the SDK at a backend: Redis to reach bridges and workers elsewhere, else an in-process one."""
    global _bridge, _ready
    overrides: dict[str, object] = {"secret_key": secret_key, "redis_url": redis_url}
    if retention is not None:
        overrides["retention_seconds"] = parse_duration_seconds(retention)
    _bridge = Bridge(Settings.from_env(**overrides))
    _ready = False
    return _bridge


def use(bridge: Bridge) -> None:
    """Makes an already started bridge (the server's or a worker's) the SDK's."""
    global _bridge, _ready
    _bridge = bridge
    _ready = True


def in_use() -> Bridge | None:
    """The bridge configured or handed over so far, if any."""
    return _bridge


def configured() -> Bridge:
    """The process's bridge, configured from the environment if nobody configured one; not started."""
    return _bridge or configure()


async def current() -> Bridge:
    """The SDK's bridge, started on first use."""
    global _ready
    bridge = configured()
    if not _ready:
        async with _start_lock:
            if not _ready:
                await bridge.start()
                _ready = True
    return bridge
