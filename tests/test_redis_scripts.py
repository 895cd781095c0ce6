"""The Lua scripts in bridge/backends/redis/scripts/: each one is used by the broker and compiles on a real Redis."""

from __future__ import annotations

from redis.asyncio import Redis

from bridge.backends.redis import RedisBroker
from bridge.backends.redis.connection import script_names, script_source
from bridge.config import Settings
from bridge.testing.redis_server import RedisServer
from tests.conftest import SECRET_KEY


async def test_every_script_is_loaded_by_the_broker_and_accepted_by_redis(redis_server: RedisServer) -> None:
    broker = RedisBroker(Settings(secret_key=SECRET_KEY, redis_url=redis_server.url, key_prefix="rbscripts"))
    client = Redis.from_url(redis_server.url)
    try:
        names = script_names()
        assert names and set(broker._conn.scripts) == set(names)  # no file unused, none missing
        for name in names:
            sha = await client.script_load(script_source(name))  # a syntax error fails here
            assert sha == broker._conn.scripts[name].sha, name
    finally:
        await client.aclose()
        await broker.stop()
