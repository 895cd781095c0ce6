"""Writes acknowledged only once replicated (`BRIDGE_REDIS_WAIT_REPLICAS`): the write, then WAIT.

WAIT counts the replicas that acknowledged the last write *of its own connection*, so both go out
together, pipelined on one connection to the master holding the key (one Redis: a pipeline from the
pool; a cluster: a connection of that master's node). Fewer replicas than asked within
REPLICA_WAIT_MS fail the call as unavailable: the master applied the write but it is not durable,
and callers treat it as not done (a stream writer retries the same chunks at the same index, an
engine write re-reads the run; both are idempotent).

In a cluster, a redirect (MOVED, ASK, TRYAGAIN: the command did not run) is followed at most
REDIRECTS times; a connection error (the write may have run: never repeated here) makes the next
call refresh the slot map first, as redis-py's own command path does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, PipelineCommand
from redis.exceptions import AskError, ClusterError, MovedError, NoScriptError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from bridge.backends.redis.cluster import BoundedCluster
from bridge.errors import BackendUnavailableError

REPLICA_WAIT_MS = 2000  # how long an acknowledged write waits for its replicas
REDIRECTS = 5  # cluster redirects followed for one write
TRY_AGAIN_SECONDS = 0.05  # pause before following TRYAGAIN (a slot being migrated)


class ReplicatedWrites:
    def __init__(self, client: Redis | BoundedCluster, replicas: int) -> None:
        self._client = client
        self.replicas = replicas
        self._stale_slots = False  # a connection failed: the cluster may have failed over

    async def write(self, key: str, command: Sequence[EncodableT], script: str | None = None) -> Any:
        """`command`'s reply once `replicas` replicas have it; `script` is the source of an EVALSHA's script."""
        asking: tuple[str, int] | None = None
        for _ in range(REDIRECTS):
            reply, acknowledged = await self._with_wait(key, command, asking)
            asking = None
            if isinstance(reply, NoScriptError) and script is not None:
                await self._client.script_load(script)  # a fresh (or failed over) master: load, run again
                continue
            if isinstance(reply, MovedError):
                self._stale_slots = True
                continue
            if isinstance(reply, AskError):
                asking = (reply.host, int(reply.port))
                continue
            if isinstance(reply, TryAgainError):
                await asyncio.sleep(TRY_AGAIN_SECONDS)
                continue
            for result in (reply, acknowledged):
                if isinstance(result, Exception):
                    raise result
            if int(acknowledged) < self.replicas:
                raise BackendUnavailableError(
                    f"Redis is unavailable: {acknowledged} of {self.replicas} replicas acknowledged a write "
                    f"within {REPLICA_WAIT_MS} ms"
                )
            return reply
        raise ClusterError(f"a write was redirected more than {REDIRECTS} times")

    async def _with_wait(
        self, key: str, command: Sequence[EncodableT], asking: tuple[str, int] | None
    ) -> tuple[Any, Any]:
        """The replies to `command` and to the WAIT after it, errors included (not raised)."""
        wait = ("WAIT", self.replicas, REPLICA_WAIT_MS)
        if isinstance(self._client, Redis):
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.execute_command(*command)
                pipe.execute_command(*wait)
                reply, acknowledged = await pipe.execute(raise_on_error=False)
            return reply, acknowledged
        node = await self._node(self._client, key, asking)
        if node is None:  # a node the slot map does not know (yet): read it again, then try again
            return TryAgainError(f"no known node for {key!r}"), None
        commands = [PipelineCommand(0, "ASKING")] if asking else []
        commands += [PipelineCommand(len(commands), *command), PipelineCommand(len(commands) + 1, *wait)]
        try:
            async with self._client.turn():
                await node.execute_pipeline(commands)
        except (RedisConnectionError, RedisTimeoutError, OSError):
            self._stale_slots = True
            raise
        reply, acknowledged = (c.result for c in commands[-2:])
        if isinstance(reply, RedisConnectionError | RedisTimeoutError):
            self._stale_slots = True
        return reply, acknowledged

    async def _node(self, cluster: BoundedCluster, key: str, asking: tuple[str, int] | None) -> ClusterNode | None:
        await cluster.initialize()  # a no-op once initialised
        if self._stale_slots:
            self._stale_slots = False
            await cluster.nodes_manager.initialize()
        node = cluster.get_node(*asking) if asking else cluster.get_node_from_key(key)
        self._stale_slots = node is None
        return node
