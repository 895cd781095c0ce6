"""The Redis broker: any number of bridge and worker processes sharing one Redis, or a Redis Cluster.

- keys.py: the key layout (every key, its hash tag, what it holds, its TTL; the steps across tags)
- connection.py: the clients, the Lua scripts (scripts/*.lua) and the error mapping every store shares
  (cluster.py: a cluster's URL and client; replicated.py: writes that wait for replicas)
- pubsub.py: the pub/sub session (confirmed subscriptions, liveness, reconnection), on the nodes of
  nodes.py (one Redis, or every master of a cluster with sharded pub/sub)
- runs.py, streams.py, queue.py, waitpoints.py, journal.py, values.py: one store per broker role
  (idempotency.py: the idempotency scopes runs and wait tokens share)
- broker.py: `RedisBroker`, composing them
- startup.py: waiting for Redis when a process starts before it
"""

from bridge.backends.redis.broker import RedisBroker

__all__ = ["RedisBroker"]
