"""A throwaway Redis Cluster on free loopback ports, owned by the test run: 3 masters, each with a replica.

`cluster-node-timeout` is 1 s, so a killed master's replica takes over within about 2 s.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot

from bridge.backends.redis.cluster import parse_cluster_url
from bridge.testing.redis_server import RedisServer, free_port, start_redis_server

MASTERS = 3
NODE_TIMEOUT_MS = 1000
READY_TIMEOUT_SECONDS = 30.0


@dataclass
class RedisClusterNodes:
    nodes: list[RedisServer]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def master_of(self, key: str) -> RedisServer:
        """The node serving `key`'s slot now."""
        slot = key_slot(key.encode())
        for node in self.nodes:
            if node.process.poll() is not None:
                continue
            with _client(node) as client:
                for start, end, master, *_ in client.execute_command("CLUSTER", "SLOTS"):
                    if start <= slot <= end:
                        port = int(master[1])
                        return next(n for n in self.nodes if n.port == port)
        raise RuntimeError(f"no live node knows the slot of {key!r}")

    def hand_over(self, master: RedisServer) -> RedisServer:
        """A manual failover (CLUSTER FAILOVER on `master`'s replica): no connection drops. Returns the new master."""
        replica = next(node for node in self.nodes if node is not master and _replicates(node, master))
        with _client(replica) as client:
            client.execute_command("CLUSTER", "FAILOVER")

        def taken_over() -> bool:
            live = [node for node in self.nodes if node.process.poll() is None]
            return all(replica.port in _master_ports(node) and master.port not in _master_ports(node) for node in live)

        _poll_until(taken_over, READY_TIMEOUT_SECONDS, f"port {replica.port} did not take over from {master.port}")
        return replica

    def wait_until_healthy(self, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """Every node sees the cluster ok, and every master has a replica in sync (its link up)."""
        _poll_until(self._healthy, timeout, "the Redis Cluster did not become healthy")

    def wait_until_failed_over(self, lost: RedisServer, timeout: float = READY_TIMEOUT_SECONDS) -> None:
        """The other nodes serve every slot again without `lost`."""

        def failed_over() -> bool:
            live = [node for node in self.nodes if node is not lost]
            return all(_state_ok(node) and lost.port not in _master_ports(node) for node in live)

        _poll_until(failed_over, timeout, f"no replica took over from port {lost.port}")

    def _healthy(self) -> bool:
        if not all(_state_ok(node) for node in self.nodes):
            return False
        masters = _master_ports(self.nodes[0])
        in_sync: set[int] = set()  # the masters with a replica in sync
        for node in self.nodes:
            if node.port not in masters:
                with _client(node) as client:
                    replication = client.info("replication")
                if replication.get("master_link_status") == "up":
                    in_sync.add(int(replication["master_port"]))
        return len(masters) == MASTERS and in_sync == masters


def start_redis_cluster() -> RedisClusterNodes:
    redis_cli = shutil.which("redis-cli")
    if redis_cli is None:
        raise RuntimeError("redis-cli is not installed: run scripts/install (the test command does)")
    nodes: list[RedisServer] = []
    cluster = RedisClusterNodes(nodes)
    try:
        for _ in range(MASTERS * 2):
            options = (
                "--cluster-enabled", "yes",
                "--cluster-port", str(free_port()),  # the default, port + 10000, may be taken or out of range
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica takes over however long it was cut off from its master.
                "--cluster-replica-validity-factor", "0",
            )  # fmt: skip
            nodes.append(start_redis_server(options=options))
        addresses = [f"127.0.0.1:{node.port}" for node in nodes]
        subprocess.run(
            [redis_cli, "--cluster", "create", *addresses, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=READY_TIMEOUT_SECONDS,
        )
        cluster.wait_until_healthy()
    except BaseException:
        cluster.stop()
        raise
    return cluster


def cluster_client(url: str) -> RedisCluster:
    """An asyncio client on the cluster a `redis+cluster://` URL names, to look at keys directly."""
    nodes, _, _ = parse_cluster_url(url)
    return RedisCluster(startup_nodes=[ClusterNode(host, port) for host, port in nodes])


@contextlib.contextmanager
def _client(node: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis(port=node.port, socket_connect_timeout=0.5, socket_timeout=2)
    try:
        yield client
    finally:
        client.close()


def _state_ok(node: RedisServer) -> bool:
    try:
        with _client(node) as client:
            return b"cluster_state:ok" in client.execute_command("CLUSTER", "INFO")
    except redis.RedisError:
        return False


def _replicates(node: RedisServer, master: RedisServer) -> bool:
    with _client(node) as client:
        replication = client.info("replication")
    return replication.get("role") == "slave" and int(replication.get("master_port", 0)) == master.port


def _master_ports(node: RedisServer) -> set[int]:
    """The ports of the masters serving slots, as `node` sees them."""
    with _client(node) as client:
        return {int(master[1]) for _, _, master, *_ in client.execute_command("CLUSTER", "SLOTS")}


def _poll_until(condition: Callable[[], bool], timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except redis.RedisError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(message)
        time.sleep(0.05)  # cluster state has no event to await: polled with a deadline
