"""The Lua scripts in bridge/backends/redis/scripts/: each one is used by the broker and compiles on a real Redis,
and on a Redis Cluster (every master gets it)."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bridge.backends.redis import RedisBroker
from bridge.backends.redis.connection import script_names, script_source
from bridge.config import Settings
from bridge.testing.redis_server import RedisServer
from tests.conftest import SECRET_KEY
from tests.support.redis_cluster import RedisClusterNodes, cluster_client


@pytest.mark.parametrize("deployment", ["redis_server", "redis_cluster"])
async def test_every_script_is_loaded_by_the_broker_and_accepted_by_redis(
    deployment: str, request: pytest.FixtureRequest
) -> None:
    redis: RedisServer | RedisClusterNodes = request.getfixturevalue(deployment)
    broker = RedisBroker(Settings(secret_key=SECRET_KEY, redis_url=redis.url, key_prefix="rbscripts"))
    client = cluster_client(redis.url) if isinstance(redis, RedisClusterNodes) else Redis.from_url(redis.url)
    try:
        names = script_names()
        assert names and set(broker._conn.scripts) == set(names)  # no file unused, none missing
        for name in names:
            sha = await client.script_load(script_source(name))  # a syntax error fails here
            assert sha == broker._conn.scripts[name].sha, name
    finally:
        await client.aclose()
        await broker.stop()
