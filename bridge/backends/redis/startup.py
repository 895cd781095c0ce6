"""`wait_until_reachable`: a `serve` or `worker` process started before its Redis (`docker compose up`,
a reboot) waits for it instead of failing. It retries with the pub/sub connection's capped backoff and
logs the outage once (`OutageLog`). What retrying cannot fix fails at once with a `ConfigError`: a URL
that is not a Redis URL, a password Redis refuses, a database it does not have.

Logs name Redis by its address only: the URL may carry a password.
"""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from bridge.backends.redis.connection import CONNECT_TIMEOUT_SECONDS, OPERATION_TIMEOUT_SECONDS, RESP_VERSION, no_retry
from bridge.backends.redis.pubsub import reconnect_delay
from bridge.config import ConfigError
from bridge.outages import OutageLog

log = logging.getLogger(__name__)


async def wait_until_reachable(url: str) -> None:
    """Returns once Redis at `url` answers PING."""
    try:
        client = Redis.from_url(
            url,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            socket_timeout=OPERATION_TIMEOUT_SECONDS,
            retry=no_retry(),
            protocol=RESP_VERSION,
        )
    except ValueError as exc:
        raise ConfigError(f"the Redis URL (--redis-url / BRIDGE_REDIS_URL) is not valid: {exc}") from exc
    where = address(client)
    outage = OutageLog(log, f"Redis at {where}")
    failures = 0
    try:
        while True:
            try:
                async with asyncio.timeout(OPERATION_TIMEOUT_SECONDS):
                    await client.ping()
                outage.recovered()
                return
            except (AuthenticationError, ResponseError) as exc:  # before RedisError: one is a ConnectionError
                raise ConfigError(f"Redis at {where} refused the connection: {exc}") from exc
            except (RedisError, OSError) as exc:  # OSError covers TimeoutError
                outage.failed(str(exc) or type(exc).__name__)
            failures += 1
            await asyncio.sleep(reconnect_delay(failures))
    finally:
        await client.aclose()


def address(client: Redis) -> str:
    options = client.connection_pool.connection_kwargs
    if options.get("path"):
        return str(options["path"])
    return f"{options.get('host') or 'localhost'}:{options.get('port') or 6379}"
