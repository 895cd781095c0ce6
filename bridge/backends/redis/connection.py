"""What every Redis store shares: the clients, the key layout, the Lua scripts, and the error mapping.

The URL picks the deployment: one Redis (`redis://`, `rediss://`, `unix://`), or a Redis Cluster
(`redis+cluster://[user:password@]host:port[,host:port...]`: any of its nodes; the rest are
discovered), where commands go through redis-py's `RedisCluster` and pub/sub is sharded (nodes.py).

Connections, one Redis: one command pool (BlockingConnectionPool, bounded), one pool for blocking
XREADGROUP calls (so a blocked read never holds a connection other commands need), and the pub/sub
connections (pubsub.py) made from their own pool. A cluster: the same two clients, each with a pool per
node; redis-py's nodes fail at once past their bound, so commands wait for a free connection
instead, as with the single pool (cluster.py). No connection has a socket timeout: every broker
call is bounded by `asyncio.timeout` instead (OPERATION_TIMEOUT_SECONDS; a claim by its BLOCK plus a
grace, so redis-py's default 5 s socket timeout never cuts a longer BLOCK short). redis-py writes
with `asyncio.wait_for(..., socket_timeout)`, which on Python 3.11 swallows a cancellation that
arrives as the write completes: a worker's loops would then outlive `Worker.stop()`.

Commands are not retried by redis-py (a retried CAS or XADD whose reply was lost would apply twice):
its retry objects allow no retry, which in a cluster also covers a connection error, a timeout and
CLUSTERDOWN (the next command reads the slot map again). What a cluster client does follow are
MOVED, ASK and TRYAGAIN: the node refused the command without running it, so sending it where it
belongs applies it once; likewise NOSCRIPT (the script is loaded, then run). A pool replaces
connections that died while idle when they are checked out. Every Redis or socket error leaving a
broker method is a `BackendUnavailableError` (HTTP 503).

With `BRIDGE_REDIS_WAIT_REPLICAS` set, acknowledged writes (each store says which) return only once
that many replicas have them (replicated.py).

Lua scripts live in `scripts/<name>.lua`, each with a header saying what it does and its KEYS/ARGV.
Every key a script touches, and the channel it publishes on, share one hash tag (keys.py).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Sequence
from importlib import resources
from importlib.abc import Traversable
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.typing import EncodableT

from bridge.backends.redis.cluster import CLUSTER_SCHEME, BoundedCluster, cluster_client
from bridge.backends.redis.keys import Keys
from bridge.backends.redis.nodes import ClusterMasters, PubSubNodes, SingleNode
from bridge.backends.redis.replicated import ReplicatedWrites
from bridge.config import Settings
from bridge.errors import BackendUnavailableError, BridgeError

T = TypeVar("T")

RESP_VERSION = 2  # redis-py 8 defaults to RESP3; the replies parsed here (pub/sub frames, streams) are RESP2's
CONNECT_TIMEOUT_SECONDS = 3.0  # TCP connect to Redis
OPERATION_TIMEOUT_SECONDS = 10.0  # a broker call (all its round trips) fails as unavailable after this long
COMMAND_POOL_MAX_CONNECTIONS = 64  # command connections per broker (a cluster: commands at once); more wait...
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
        self.retention_ms = max(1, int(settings.retention_seconds * 1000))
        self.redis: Redis | BoundedCluster
        self.blocking: Redis | BoundedCluster
        self.pubsub_nodes: PubSubNodes
        if url.startswith(CLUSTER_SCHEME):
            options = {**_CONNECTION_OPTIONS, "retry": no_retry(), "wait_seconds": POOL_WAIT_SECONDS}
            self.redis = cluster_client(url, COMMAND_POOL_MAX_CONNECTIONS, **options)
            self.blocking = cluster_client(url, BLOCKING_POOL_MAX_CONNECTIONS, **options)
            self.pubsub_nodes = ClusterMasters(self.redis)
        else:
            self.redis = _single(url, COMMAND_POOL_MAX_CONNECTIONS)
            self.blocking = _single(url, BLOCKING_POOL_MAX_CONNECTIONS)
            pool = ConnectionPool.from_url(url, retry=no_retry(), **_CONNECTION_OPTIONS)
            self.pubsub_nodes = SingleNode(pool)
        self.cluster = isinstance(self.redis, RedisCluster)
        self.keys = Keys(settings.key_prefix, sharded=self.cluster)
        # A cluster publishes in the channel's slot (sharded pub/sub); one Redis, to every subscriber.
        self.publish_command = "SPUBLISH" if self.cluster else "PUBLISH"
        replicas = settings.redis_wait_replicas
        self.replicated = ReplicatedWrites(self.redis, replicas) if replicas > 0 else None
        self.scripts: dict[str, Script] = {}  # registered so far, by name

    def script(self, name: str, *, acknowledged: bool = False) -> Script:
        """`scripts/<name>.lua`, run by EVALSHA (loaded on first use). An `acknowledged` one is a write a
        caller is told is done: with BRIDGE_REDIS_WAIT_REPLICAS, it waits for the replicas."""
        if name not in self.scripts:
            self.scripts[name] = Script(self, name, acknowledged)
        return self.scripts[name]

    async def write(self, key: str, *command: EncodableT) -> Any:
        """An acknowledged write of one command on `key` (with BRIDGE_REDIS_WAIT_REPLICAS, replicated)."""
        if self.replicated is None:
            return await self.redis.execute_command(*command)
        return await self.replicated.write(key, command)

    async def ping(self) -> None:
        """Every master of a cluster must answer."""
        if isinstance(self.redis, RedisCluster):
            await self.redis.execute_command("PING", target_nodes=RedisCluster.PRIMARIES)
        else:
            await self.redis.ping()

    async def publish(self, wire_channel: str, data: bytes) -> None:
        await self.redis.execute_command(self.publish_command, wire_channel, data)

    async def close(self) -> None:
        await self.blocking.aclose()
        await self.redis.aclose()
        await self.pubsub_nodes.close()


class Script:
    """One Lua script, called with its keys (all in one slot) and arguments."""

    def __init__(self, conn: Connection, name: str, acknowledged: bool) -> None:
        self.source = script_source(name)
        self._registered = conn.redis.register_script(self.source)
        self.sha = self._registered.sha
        self._replicated = conn.replicated if acknowledged else None

    async def __call__(self, keys: Sequence[str], args: Sequence[EncodableT]) -> Any:
        if self._replicated is None:
            return await self._registered(keys=keys, args=args)
        command = ("EVALSHA", self.sha, len(keys), *keys, *args)
        return await self._replicated.write(keys[0], command, self.source)


# Every connection: a bounded connect, no socket timeout (see the module docstring: bounded by
# OPERATION_TIMEOUT_SECONDS), RESP2.
_CONNECTION_OPTIONS: dict[str, Any] = {
    "socket_timeout": None,
    "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "protocol": RESP_VERSION,
}


def _single(url: str, max_connections: int) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=POOL_WAIT_SECONDS, retry=no_retry(), **_CONNECTION_OPTIONS
    )
    return Redis.from_pool(pool)


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
