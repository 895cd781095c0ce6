"""The Redis broker: any number of bridge and worker processes sharing one Redis.

- keys.py: the key layout (every key, its hash tag, what it holds, its TTL)
- connection.py: the clients, the Lua scripts (scripts/*.lua) and the error mapping every store shares
- pubsub.py: the one pub/sub connection (confirmed subscriptions, liveness, reconnection)
- runs.py, streams.py, queue.py, waitpoints.py, journal.py, values.py: one store per broker role
  (idempotency.py: the idempotency scopes runs and wait tokens share)
- broker.py: `RedisBroker`, composing them
- startup.py: waiting for Redis when a process starts before it
"""

from bridge.backends.redis.broker import RedisBroker

__all__ = ["RedisBroker"]
