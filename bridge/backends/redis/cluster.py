"""A Redis Cluster's URL, and redis-py's cluster client bounded as the single-node pool is.

`redis+cluster://[user:password@]host:port[,host:port...]` names any nodes of the cluster; the
client discovers the rest. redis-py's cluster nodes each have a pool that fails a command at once
past its bound (MaxConnectionsError); `BoundedCluster` makes commands and pipelines wait for a turn
instead (at most `max_connections` at once over all nodes, so no node needs more), as the single
node's BlockingConnectionPool does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.exceptions import MaxConnectionsError, RedisClusterException
from redis.typing import EncodableT

CLUSTER_SCHEME = "redis+cluster://"


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], str | None, str | None]:
    """`redis+cluster://[user:password@]host:port[,host:port...]` -> (nodes, user, password)."""
    rest = url.removeprefix(CLUSTER_SCHEME).split("/", 1)[0]
    credentials, _, hosts = rest.rpartition("@")
    username, _, password = credentials.partition(":")
    nodes: list[tuple[str, int]] = []
    for node in hosts.split(","):
        host, _, port = node.strip().rpartition(":")
        if not host or not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a Redis Cluster URL lists host:port pairs: {CLUSTER_SCHEME}host:port[,host:port...]")
        nodes.append((host.removeprefix("[").removesuffix("]"), int(port)))
    return nodes, unquote(username) or None, unquote(password) or None


def cluster_client(url: str, max_connections: int, *, wait_seconds: float, **options: Any) -> BoundedCluster:
    nodes, username, password = parse_cluster_url(url)
    return BoundedCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in nodes],
        max_connections=max_connections,
        wait_seconds=wait_seconds,
        username=username,
        password=password,
        **options,
    )


class BoundedCluster(RedisCluster):
    def __init__(self, *, max_connections: int, wait_seconds: float, **options: Any) -> None:
        super().__init__(max_connections=max_connections, **options)
        self._turns = asyncio.Semaphore(max_connections)
        self._wait_seconds = wait_seconds

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """One of the commands (or pipelines) at once; waits for one to end, at most `wait_seconds`."""
        try:
            async with asyncio.timeout(self._wait_seconds):
                await self._turns.acquire()
        except TimeoutError:
            raise MaxConnectionsError(f"no free Redis connection within {self._wait_seconds:g}s") from None
        try:
            yield
        finally:
            self._turns.release()

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _BoundedPipeline(self, transaction)  # type: ignore[abstract]  # as RedisCluster.pipeline does


class _BoundedPipeline(ClusterPipeline):
    """A pipeline takes one turn: it uses at most one connection per node."""

    def __init__(self, client: BoundedCluster, transaction: Any | None) -> None:
        super().__init__(client, transaction)
        self._bounded = client

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with self._bounded.turn():
            return await super().execute(raise_on_error, allow_redirections)
