"""What every Redis store shares: the connections, the key layout, the Lua scripts, and the error mapping.

Connections: one command pool (BlockingConnectionPool, bounded), one pool for blocking
XREADGROUP calls (so a blocked read never holds a connection other commands need), and ONE
dedicated pub/sub connection (pubsub.py) made from its own pool. None has a socket timeout: every
broker call is bounded by `asyncio.timeout` instead (OPERATION_TIMEOUT_SECONDS; a claim by its
BLOCK plus a grace, so redis-py's default 5 s socket timeout never cuts a longer BLOCK short).
redis-py writes with `asyncio.wait_for(..., socket_timeout)`, which on Python 3.11 swallows a
cancellation that arrives as the write completes: a worker's loops would then outlive `Worker.stop()`.

Commands are not retried by redis-py (a retried CAS or XADD whose reply was lost would apply
twice); the pool replaces connections that died while idle when they are checked out. Every Redis
or socket error leaving a broker method is a `BackendUnavailableError` (HTTP 503).

Lua scripts live in `scripts/<name>.lua`, each with a header saying what it does and its KEYS/ARGV.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from importlib import resources
from importlib.abc import Traversable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from bridge.backends.redis.keys import Keys
from bridge.config import Settings
from bridge.errors import BackendUnavailableError, BridgeError

T = TypeVar("T")

RESP_VERSION = 2  # redis-py 8 defaults to RESP3; the replies parsed here (pub/sub frames, streams) are RESP2's
CONNECT_TIMEOUT_SECONDS = 3.0  # TCP connect to Redis
OPERATION_TIMEOUT_SECONDS = 10.0  # a broker call (all its round trips) fails as unavailable after this long
COMMAND_POOL_MAX_CONNECTIONS = 64  # command connections per broker; more concurrent commands wait...
POOL_WAIT_SECONDS = 5.0  # ...this long for a free connection, then fail as unavailable
BLOCKING_POOL_MAX_CONNECTIONS = 16  # concurrent `claim` calls per broker (a worker makes one at a time)


def _scripts() -> Traversable:
    return resources.files("bridge.backends.redis") / "scripts"


def script_names() -> list[str]:
    """Every script in `scripts/`, by name (its file name without `.lua`)."""
    return sorted(f.name.removesuffix(".lua") for f in _scripts().iterdir() if f.name.endswith(".lua"))


def script_source(name: str) -> str:
    return (_scripts() / f"{name}.lua").read_text(encoding="utf-8")


class Connection:
    """The clients, keys and scripts one broker's stores share."""

    def __init__(self, settings: Settings) -> None:
        if not settings.redis_url:
            raise ValueError("RedisBroker needs settings.redis_url")
        url = settings.redis_url
        self.settings = settings
        self.keys = Keys(settings.key_prefix)
        self.retention_ms = max(1, int(settings.retention_seconds * 1000))
        self.redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=COMMAND_POOL_MAX_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                socket_timeout=None,  # see the module docstring: bounded by OPERATION_TIMEOUT_SECONDS
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                retry=no_retry(),
                protocol=RESP_VERSION,
            )
        )
        self.blocking = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=BLOCKING_POOL_MAX_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                socket_timeout=None,  # bounded per claim by its BLOCK plus a grace (queue.py)
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                retry=no_retry(),
                protocol=RESP_VERSION,
            )
        )
        self.pubsub_pool = ConnectionPool.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            retry=no_retry(),
            protocol=RESP_VERSION,
        )
        self.scripts: dict[str, AsyncScript] = {}  # registered so far, by name

    def script(self, name: str) -> AsyncScript:
        """`scripts/<name>.lua`, registered on the command client (EVALSHA, loaded on first use)."""
        if name not in self.scripts:
            self.scripts[name] = self.redis.register_script(script_source(name))
        return self.scripts[name]

    async def close(self) -> None:
        await self.blocking.aclose()
        await self.redis.aclose()
        await self.pubsub_pool.disconnect()


def no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


@contextlib.asynccontextmanager
async def unavailable(action: str, deadline: float = OPERATION_TIMEOUT_SECONDS) -> AsyncIterator[None]:
    """Bounds a broker call, and turns any Redis or socket error into the 503 every caller handles."""
    try:
        async with asyncio.timeout(deadline):
            yield
    except BridgeError:
        raise
    except (RedisError, OSError) as exc:  # OSError covers TimeoutError from asyncio.timeout
        detail = str(exc) or type(exc).__name__
        raise BackendUnavailableError(f"Redis is unavailable: {action} failed ({detail})") from exc


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)
