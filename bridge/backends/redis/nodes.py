"""Where the broker's pub/sub connections go, and which of them carries a channel.

One Redis: one connection, classic SUBSCRIBE / PUBLISH. A Redis Cluster: one connection per master
(each owns slots, and a channel may land in any of them), with sharded pub/sub (SSUBSCRIBE /
SPUBLISH, Redis >= 7): a channel lives in the slot of its wire name, which carries its owner's hash
tag (keys.py), so a message travels only to the shard holding that slot, never over the whole
cluster bus. Every pub/sub session reads the layout afresh (pubsub.py), so a failover or a
resharding is followed by reconnecting.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from redis.asyncio import ConnectionPool
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot


@dataclass(frozen=True)
class Commands:
    """The pub/sub commands and the kinds of the frames that answer them."""

    subscribe: str
    unsubscribe: str
    message: bytes
    subscribed: bytes
    unsubscribed: bytes


CLASSIC = Commands("SUBSCRIBE", "UNSUBSCRIBE", b"message", b"subscribe", b"unsubscribe")
SHARDED = Commands("SSUBSCRIBE", "SUNSUBSCRIBE", b"smessage", b"ssubscribe", b"sunsubscribe")


@dataclass(frozen=True)
class Layout:
    """One pub/sub session's nodes: a new connection to each, and the owner of each slot (None: one node)."""

    connections: dict[str, Callable[[], AbstractConnection]]
    slot_owners: Sequence[str] | None = None

    def groups(self, wires: Iterable[str]) -> dict[str, list[list[str]]]:
        """The channels per node, grouped as one (S)SUBSCRIBE may carry them (a sharded one: one slot's)."""
        if self.slot_owners is None:
            (node,) = self.connections
            return {node: [list(wires)]}
        by_slot: dict[int, list[str]] = {}
        for wire in wires:
            by_slot.setdefault(key_slot(wire.encode()), []).append(wire)
        per_node: dict[str, list[list[str]]] = {}
        for slot, in_slot in by_slot.items():
            per_node.setdefault(self.slot_owners[slot], []).append(in_slot)
        return per_node


class PubSubNodes(ABC):
    """The nodes pub/sub sessions connect to, and the commands they speak."""

    commands: Commands

    @abstractmethod
    async def layout(self) -> Layout:
        """The nodes as they are now (a cluster's slot map is read again)."""

    @abstractmethod
    async def close(self) -> None: ...


class SingleNode(PubSubNodes):
    """The one Redis the URL names."""

    commands = CLASSIC

    def __init__(self, pool: ConnectionPool) -> None:
        self._pool = pool

    async def layout(self) -> Layout:
        return Layout({"redis": self._pool.make_connection})

    async def close(self) -> None:
        await self._pool.disconnect()


class ClusterMasters(PubSubNodes):
    """Every master that owns slots, as the command client's slot map has it once refreshed."""

    commands = SHARDED

    def __init__(self, cluster: RedisCluster) -> None:
        self._cluster = cluster

    async def layout(self) -> Layout:
        await self._cluster.initialize()  # a no-op once initialised
        manager = self._cluster.nodes_manager
        await manager.initialize()  # read again: the command client routes by it too, so both follow a failover
        owners = [manager.get_node_from_slot(slot).name for slot in range(REDIS_CLUSTER_HASH_SLOTS)]
        masters = {node.name: _connection_to(node) for node in self._cluster.get_primaries()}
        return Layout(masters, owners)

    async def close(self) -> None:
        pass  # each session closes its own connections; the command client is closed by its owner


def _connection_to(node: ClusterNode) -> Callable[[], AbstractConnection]:
    def connect() -> AbstractConnection:
        # Never reconnected behind the session's back: a session ends with its connection.
        return node.connection_class(**{**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)})

    return connect
