"""The Redis broker: any number of bridge and worker processes sharing one Redis.

Keys are laid out for Redis Cluster from the start: every key one command or script touches
together shares a hash tag (the part in braces), so it lives in one slot. With P the key
prefix (`settings.key_prefix`):

    P:{run_<id>}:run          hash {version, data}: the run's `to_storage()` bytes and its version;
                              TTL = retention, refreshed on every write
    P:{run_<id>}:stream:<key>  stream of a run's output chunks, entry id 0-<index + 1>, field d = the
                              chunk's JSON; TTL = retention, refreshed on every append
    P:{tag:<tag>}:runs        sorted set run id -> createdAt ms; TTL = retention, refreshed and
                              trimmed to runs created within the retention on every insert
    P:{batch:<id>}:runs       list of run ids in insertion order; TTL = retention, at most
                              BATCH_INDEX_MAX_RUNS ids
    P:{idem:<scope>}          string: the run id owning an idempotency scope; TTL = the key's TTL
    P:{once:<key>}            string: a one-time key (`claim_once`); TTL = the given ttl
    P:{value:<key>}           string: a small value (`put_value`, e.g. a batch's run count); TTL = the given ttl
    P:{waitpoint_<id>}:waitpoint  hash {spec, result}: a wait token's creation record and, once done, its
                              result; TTL = retention after the deadline, then retention after the result
    P:{waitpoints}:deadlines  sorted set token id -> deadline ms, until the timer fired it (one key:
                              every process's timer reads it; a member is ~40 bytes)
    P:{tasks}                 set of registered task ids; no TTL (tiny), and re-added by this
                              process after every reconnection, in case Redis lost its data
    P:{queue}:task:<task_id>  stream of queued run ids with the consumer group "workers"; every
                              stream shares the {queue} tag, so one XREADGROUP over several
                              streams, and one heartbeat script, work in Cluster

Pub/sub channels on the wire are `P:<channel>` (`P:run:<id>`, `P:tag:<tag>`, `P:batch:<id>`,
`P:stream:<run>:<key>`, `P:waitpoint:<id>`, `P:control:cancel`); the prefix is stripped before a
message reaches `on_message`.

Connections: one command pool (BlockingConnectionPool, bounded), one pool for blocking
XREADGROUP calls (so a blocked read never holds a connection other commands need), and ONE
dedicated pub/sub connection managed by `_Subscriptions`. None has a socket timeout: every broker
call is bounded by `asyncio.timeout` instead (OPERATION_TIMEOUT_SECONDS; a claim by its BLOCK plus
a grace, so redis-py's default 5 s socket timeout never cuts a longer BLOCK short). redis-py writes
with `asyncio.wait_for(..., socket_timeout)`, which on Python 3.11 swallows a cancellation that
arrives as the write completes: a worker's loops would then outlive `Worker.stop()`.
`_Subscriptions`: `listen` returns once Redis confirmed the subscription; a dropped connection (or
one that stops answering PING) is replaced with capped exponential backoff and jitter, every
channel is resubscribed, and only then is `on_resync` called.

Commands are not retried by redis-py (a retried CAS or XADD whose reply was lost would apply
twice); the pool replaces connections that died while idle when they are checked out. Every Redis
or socket error leaving a broker method is a `BackendUnavailableError` (HTTP 503).

Queue semantics (at-least-once): XADD enqueues; XREADGROUP hands an entry to one consumer (the
worker id) and keeps it pending until `ack` (XACK + XDEL, so streams hold only unfinished work);
`heartbeat` resets the idle time of the worker's own pending entries; `reclaim_abandoned`
XAUTOCLAIMs entries idle for a lease. A claim never takes more than one run: a script first reads
the worker's streams one at a time, COUNT 1, starting from a different stream each call (fair
across tasks); only when all are empty does it block in one XREADGROUP over all of them (COUNT
applies per stream there, so a run beyond the first, rare, is put straight back in its queue).

Every bound is a constant below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from bridge.aio import cancel_and_wait
from bridge.backends.base import Broker, Delivery, channels_of, stream_channel, waitpoint_channel
from bridge.config import Settings
from bridge.errors import BackendUnavailableError, BridgeError, ConflictError, NotFoundError, RunFinishedError
from bridge.models import Run, now_ms

log = logging.getLogger(__name__)
T = TypeVar("T")

# Connections
RESP_VERSION = 2  # redis-py 8 defaults to RESP3; the replies parsed here (pub/sub frames, streams) are RESP2's
CONNECT_TIMEOUT_SECONDS = 3.0  # TCP connect to Redis
OPERATION_TIMEOUT_SECONDS = 10.0  # a broker call (all its round trips) fails as unavailable after this long
COMMAND_TIMEOUT_SECONDS = 5.0  # one write to the pub/sub connection
COMMAND_POOL_MAX_CONNECTIONS = 64  # command connections per broker; more concurrent commands wait...
POOL_WAIT_SECONDS = 5.0  # ...this long for a free connection, then fail as unavailable
BLOCKING_POOL_MAX_CONNECTIONS = 16  # concurrent `claim` calls per broker (a worker makes one at a time)
CLAIM_READ_GRACE_SECONDS = 2.0  # a claim's reply may arrive this long after its BLOCK ran out

# The pub/sub connection
RECONNECT_BACKOFF_BASE_SECONDS = 0.05  # first retry after a drop: 25-50 ms (jitter: x0.5-1.0)
RECONNECT_BACKOFF_CAP_SECONDS = 5.0  # retries never wait longer than this
PUBSUB_PING_INTERVAL_SECONDS = 5.0  # a PING this often detects a connection that died silently...
PUBSUB_PING_TIMEOUT_SECONDS = 3.0  # ...when its answer takes longer than this
PUBSUB_OPEN_TIMEOUT_SECONDS = CONNECT_TIMEOUT_SECONDS + OPERATION_TIMEOUT_SECONDS  # connect and handshake
LISTEN_TIMEOUT_SECONDS = 5.0  # `listen` waits this long for Redis's confirmation (or for a reconnection)
SUBSCRIBE_CHUNK = 500  # channels per SUBSCRIBE/UNSUBSCRIBE command

# The queue
CONSUMER_GROUP = "workers"
RECLAIM_COUNT = 10  # entries XAUTOCLAIMed per task stream per `reclaim_abandoned` call
HEARTBEAT_CHUNK = 100  # deliveries per heartbeat script call
CONSUMER_PRUNE_INTERVAL_SECONDS = 60.0  # how often `reclaim_abandoned` removes the consumers of dead workers...
CONSUMER_PRUNE_IDLE_LEASES = 10  # ...idle this many leases with nothing pending (a live worker reads every second)

# Indexes
TAG_SCAN_PAGE = 256  # tag index members read per round trip
TAG_SCAN_MAX_MEMBERS = 100_000  # a tag query stops after scanning this many members of its smallest index
BATCH_INDEX_MAX_RUNS = 10_000  # a batch index keeps its first this many runs (batches hold at most 500)
FETCH_CHUNK = 500  # runs read per pipeline

# Idempotency: a scope taken by a run that is not stored (yet) is waited for, then taken over.
IDEMPOTENCY_SETTLE_SECONDS = 1.0  # how long a concurrent insert of the same scope may take to store its run
IDEMPOTENCY_POLL_SECONDS = 0.02
IDEMPOTENCY_ATTEMPTS = 3

# KEYS[1]: the run hash. ARGV: expected version ("0": must not exist), new version, data, TTL ms,
# "1" if the status is final else "0" (read by SEND_INPUT_SCRIPT), then the (prefixed) channels to
# publish the data on. Compare-and-set, expiry and notification
# happen atomically, so a change is never stored without being published nor published unstored.
STORE_RUN_SCRIPT = """
local current = redis.call('HGET', KEYS[1], 'version')
if ARGV[1] == '0' then
  if current then return 0 end
elseif current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'data', ARGV[3], 'final', ARGV[5])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
for i = 6, #ARGV do
  redis.call('PUBLISH', ARGV[i], ARGV[3])
end
return 1
"""

# KEYS[1]: a run's output stream. ARGV: TTL ms, the (prefixed) channel, then the chunks. Entry ids
# are `0-<index + 1>` (XADD's `0-*` picks the next sequence number), so indexes are gapless whatever
# the number of writers, and reading from an index is one XRANGE. Stored and published atomically.
APPEND_CHUNKS_SCRIPT = """
local first
for i = 3, #ARGV do
  local id = redis.call('XADD', KEYS[1], '0-*', 'd', ARGV[i])
  if not first then first = tonumber(string.match(id, '-(%d+)$')) - 1 end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PUBLISH', ARGV[2], tostring(first) .. '\\n' .. table.concat(ARGV, '\\n', 3))
return first
"""

# KEYS[1]: a run's stream. ARGV: the first entry id, the most chunks, the most bytes. Reads in
# batches of 100 and stops before the chunk that would pass the byte bound (the first is always
# returned), so neither Redis nor the reader ever holds more than a bounded page.
READ_CHUNKS_SCRIPT = """
local page, size, start = {}, 0, ARGV[1]
local wanted, budget = tonumber(ARGV[2]), tonumber(ARGV[3])
while #page < wanted do
  local batch = math.min(100, wanted - #page)
  local entries = redis.call('XRANGE', KEYS[1], start, '+', 'COUNT', batch)
  for _, entry in ipairs(entries) do
    local data = entry[2][2]
    if #page > 0 and size + #data > budget then return page end
    size = size + #data
    page[#page + 1] = data
  end
  if #entries < batch then break end
  start = '(' .. entries[#entries][1]
end
return page
"""

# KEYS[1]: the run hash, KEYS[2]: one of its input streams (stored like an output stream). ARGV: TTL
# ms, the (prefixed) channel, the value. Refuses an unknown (-1) or finished (-2) run in the same
# atomic step as the append, so a value is never accepted by a run that can no longer take it.
SEND_INPUT_SCRIPT = """
local final = redis.call('HGET', KEYS[1], 'final')
if not final then return -1 end
if final == '1' then return -2 end
local id = redis.call('XADD', KEYS[2], '0-*', 'd', ARGV[3])
local index = tonumber(string.match(id, '-(%d+)$')) - 1
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[2], tostring(index) .. '\\n' .. ARGV[3])
return index
"""

# KEYS[1]: the idempotency key. ARGV: run id, TTL ms, a stale owner to take over (or "").
# Returns nil when the scope is now the run's, else the run id owning it.
CLAIM_IDEMPOTENCY_SCRIPT = """
local current = redis.call('GET', KEYS[1])
if current and current ~= ARGV[3] then
  return current
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""

# KEYS[1]: a wait token's hash. ARGV: the result, TTL ms (a longer remaining TTL is kept), the
# (prefixed) channel. The first result wins: a later one is not stored, and the stored one is
# returned (false for an unknown token).
COMPLETE_WAITPOINT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local existing = redis.call('HGET', KEYS[1], 'result')
if existing then return existing end
redis.call('HSET', KEYS[1], 'result', ARGV[1])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[2]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
redis.call('PUBLISH', ARGV[3], ARGV[1])
return ARGV[1]
"""

# KEYS: task streams, in the order to try. ARGV: group, consumer. Reads at most one entry:
# {index of its stream in KEYS, entry id, run id}, or nil when every stream is empty.
CLAIM_SCRIPT = """
for i = 1, #KEYS do
  local reply = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', 1, 'STREAMS', KEYS[i], '>')
  if reply and reply[1] then
    local entry = reply[1][2][1]
    local fields = entry[2]
    local run = ''
    for j = 1, #fields, 2 do
      if fields[j] == 'run' then run = fields[j + 1] end
    end
    return {i, entry[1], run}
  end
end
return false
"""

# KEYS[1]: a task stream. ARGV: group, entry id, run id. Puts a claimed entry back in the queue
# (at its end), atomically, so it is never lost nor held by a worker that did not ask for it.
REQUEUE_SCRIPT = """
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  redis.call('XADD', KEYS[1], '*', 'run', ARGV[3])
  return 1
end
return 0
"""

# KEYS[i]: the stream of delivery i. ARGV: group, consumer, then the entry id of each delivery.
# Resets the idle time of the entries still pending for this consumer (never takes back an entry
# another worker reclaimed meanwhile).
HEARTBEAT_SCRIPT = """
local kept = 0
for i = 1, #KEYS do
  local id = ARGV[2 + i]
  local pending = redis.pcall('XPENDING', KEYS[i], ARGV[1], id, id, 1, ARGV[2])
  if type(pending) == 'table' and not pending.err and pending[1] then
    redis.call('XCLAIM', KEYS[i], ARGV[1], ARGV[2], 0, id, 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""


@contextlib.asynccontextmanager
async def _unavailable(action: str, deadline: float = OPERATION_TIMEOUT_SECONDS) -> AsyncIterator[None]:
    """Bounds a broker call, and turns any Redis or socket error into the 503 every caller handles."""
    try:
        async with asyncio.timeout(deadline):
            yield
    except BridgeError:
        raise
    except (RedisError, OSError) as exc:  # OSError covers TimeoutError from asyncio.timeout
        detail = str(exc) or type(exc).__name__
        raise BackendUnavailableError(f"Redis is unavailable: {action} failed ({detail})") from exc


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes | bytearray) else str(value)


def _no_retry() -> Retry:
    return Retry(NoBackoff(), 0)


def reconnect_delay(failures: int) -> float:
    """Capped exponential backoff with jitter: 25-50 ms after the first failure, at most the cap."""
    ceiling = min(RECONNECT_BACKOFF_CAP_SECONDS, RECONNECT_BACKOFF_BASE_SECONDS * 2.0 ** min(failures, 16))
    return ceiling * random.uniform(0.5, 1.0)


class _ConnectionLost(Exception):
    """The pub/sub connection ended or stopped answering."""


class _Subscriptions:
    """The broker's one pub/sub connection: confirmed subscriptions, liveness and reconnection.

    `_wanted` counts `listen` calls per channel: it is what every new connection subscribes to.
    A SUBSCRIBE in flight has an entry in `_in_flight` (a FIFO per channel, matching Redis's
    in-order replies) holding the futures of the `listen` calls waiting for its confirmation.
    Waiters of a connection that dropped move to `_deferred` and are confirmed by the next
    connection's resubscription.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        prefix: str,
        dispatch: Callable[[str, bytes], None],
        reconnected: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._pool = pool
        self._prefix = prefix + ":"
        self._dispatch = dispatch
        self._reconnected = reconnected  # called with resync=True after every reconnection but the first
        self._wanted: dict[str, int] = {}
        self._confirmed: set[str] = set()
        self._in_flight: dict[str, deque[list[asyncio.Future[None]]]] = {}
        self._deferred: dict[str, list[asyncio.Future[None]]] = {}
        self._pongs: deque[asyncio.Future[None]] = deque()
        self._conn: AbstractConnection | None = None  # the connection commands go to, once it subscribed
        self._lock = asyncio.Lock()  # serialises writes to the connection
        self._was_live = False
        self._sessions = 0
        self._first_attempt = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.live = False
        self.down = asyncio.Event()  # set while no connection is live (tests await it)
        self.down.set()

    # lifecycle
    async def start(self) -> None:
        self._task = asyncio.create_task(self._run_forever(), name="redis-broker-pubsub")
        await self._first_attempt.wait()

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        stopped = BackendUnavailableError("the Redis broker stopped")
        for waiters in self._deferred.values():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(stopped)
        self._deferred.clear()

    # subscriptions
    async def listen(self, channels: Iterable[str]) -> None:
        loop = asyncio.get_running_loop()
        added: list[str] = []
        waiters: list[asyncio.Future[None]] = []
        try:
            async with self._lock:
                to_send: list[str] = []
                for channel in channels:
                    count = self._wanted.get(channel, 0)
                    self._wanted[channel] = count + 1
                    added.append(channel)
                    if channel in self._confirmed:
                        continue
                    waiter: asyncio.Future[None] = loop.create_future()
                    waiters.append(waiter)
                    in_flight = self._in_flight.get(channel)
                    if self._conn is None:
                        self._deferred.setdefault(channel, []).append(waiter)
                    elif count and in_flight:
                        in_flight[-1].append(waiter)  # a SUBSCRIBE for it is on its way: wait for that one
                    else:
                        self._in_flight.setdefault(channel, deque()).append([waiter])
                        to_send.append(channel)
                if to_send and self._conn is not None:
                    await self._send_quietly(self._conn, "SUBSCRIBE", to_send)
            if waiters:
                async with asyncio.timeout(LISTEN_TIMEOUT_SECONDS):
                    await asyncio.gather(*waiters)
        except BaseException as exc:
            for waiter in waiters:
                waiter.cancel()
            await self.unlisten(added)
            if isinstance(exc, TimeoutError):
                raise BackendUnavailableError(
                    f"Redis did not confirm the subscription within {LISTEN_TIMEOUT_SECONDS:g}s"
                ) from exc
            raise

    async def unlisten(self, channels: Iterable[str]) -> None:
        """Stops delivery at once (messages of unwanted channels are dropped); never raises."""
        gone: list[str] = []
        for channel in channels:
            count = self._wanted.get(channel, 0)
            if count > 1:
                self._wanted[channel] = count - 1
            elif count == 1:
                del self._wanted[channel]
                self._confirmed.discard(channel)
                gone.append(channel)
        if gone:
            async with self._lock:
                if self._conn is not None:
                    await self._send_quietly(self._conn, "UNSUBSCRIBE", gone)

    async def _send(self, conn: AbstractConnection, command: str, channels: Sequence[str] | None = None) -> None:
        """Sends `command` (once per chunk of `channels` when given; nothing for no channels)."""
        if not conn.is_connected:  # never let redis-py reconnect this connection behind our back
            raise _ConnectionLost("the pub/sub connection is closed")
        async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
            if channels is None:
                await conn.send_command(command, check_health=False)
                return
            for chunk in _chunks(channels, SUBSCRIBE_CHUNK):
                await conn.send_command(command, *(self._prefix + c for c in chunk), check_health=False)

    async def _send_quietly(self, conn: AbstractConnection, command: str, channels: Sequence[str]) -> None:
        """A failed write means a failed connection: the reader or the pinger ends the session."""
        try:
            await self._send(conn, command, channels)
        except (RedisError, OSError, _ConnectionLost) as exc:
            log.debug("pub/sub %s not sent: %s", command, exc)

    # incoming frames
    def _handle(self, frame: Any) -> None:
        if isinstance(frame, list) and frame:
            kind = frame[0]
            if kind == b"message" and len(frame) == 3:
                name = _text(frame[1])
                if name.startswith(self._prefix):
                    channel = name[len(self._prefix) :]
                    if channel in self._wanted:
                        try:
                            self._dispatch(channel, bytes(frame[2]))
                        except Exception:
                            log.exception("message handler failed on %s", channel)
            elif kind == b"subscribe" and len(frame) >= 2:
                self._on_subscribed(_text(frame[1])[len(self._prefix) :])
            elif kind == b"pong":
                self._on_pong()
        elif frame == b"PONG":  # PING outside subscribed mode (no channel wanted)
            self._on_pong()

    def _on_subscribed(self, channel: str) -> None:
        entries = self._in_flight.get(channel)
        if entries:
            for waiter in entries.popleft():
                if not waiter.done():
                    waiter.set_result(None)
            if not entries:
                del self._in_flight[channel]
        if channel not in self._in_flight and channel in self._wanted:
            self._confirmed.add(channel)  # confirmed by the latest SUBSCRIBE sent for it

    def _on_pong(self) -> None:
        while self._pongs:
            pong = self._pongs.popleft()
            if not pong.done():
                pong.set_result(None)
                return

    # the connection's life
    async def _run_forever(self) -> None:
        failures = 0
        while True:
            sessions = self._sessions
            try:
                await self._session(self._pool.make_connection())  # type: ignore[no-untyped-call]
            except (RedisError, OSError, _ConnectionLost) as exc:
                if self._sessions != sessions:
                    log.warning("Redis pub/sub connection lost (%s); reconnecting", str(exc) or type(exc).__name__)
                elif failures == 0:
                    log.warning("cannot open the Redis pub/sub connection (%s); retrying", exc)
            except Exception:
                log.exception("Redis pub/sub connection failed; reconnecting")
            finally:
                self._first_attempt.set()
            failures = 0 if self._sessions != sessions else failures + 1
            await asyncio.sleep(reconnect_delay(failures))

    async def _session(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        handshake: list[asyncio.Future[None]] = []
        reader: asyncio.Task[None] | None = None
        pinger: asyncio.Task[None] | None = None
        confirmed: asyncio.Future[list[None]] | None = None
        try:
            async with asyncio.timeout(PUBSUB_OPEN_TIMEOUT_SECONDS):
                await conn.connect()  # type: ignore[no-untyped-call]
                async with self._lock:
                    for channel in self._wanted:
                        waiter: asyncio.Future[None] = loop.create_future()
                        handshake.append(waiter)
                        earlier = [w for w in self._deferred.pop(channel, []) if not w.done()]
                        self._in_flight[channel] = deque([[waiter, *earlier]])
                    for waiters in self._deferred.values():  # channels unwanted since: their listen gave up
                        for waiter in waiters:
                            waiter.cancel()
                    self._deferred.clear()
                    await self._send(conn, "SUBSCRIBE", list(self._wanted))
                    self._conn = conn
                reader = asyncio.create_task(self._read_forever(conn), name="redis-broker-pubsub-reader")
                if handshake:
                    confirmed = asyncio.gather(*handshake)
                    ends: list[asyncio.Future[Any]] = [reader, confirmed]
                    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                    if reader.done():
                        reader.result()
                        raise _ConnectionLost("the connection closed during the handshake")
            self.live = True
            self.down.clear()
            self._first_attempt.set()
            self._sessions += 1
            resync, self._was_live = self._was_live, True
            await self._reconnected(resync)
            pinger = asyncio.create_task(self._ping_forever(conn), name="redis-broker-pubsub-pinger")
            done, _ = await asyncio.wait({reader, pinger}, return_when=asyncio.FIRST_COMPLETED)
            for ended in done:
                ended.result()
            raise _ConnectionLost("the connection closed")
        finally:
            self._drop()
            pending = [t for t in (reader, pinger, confirmed) if t is not None]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            with contextlib.suppress(Exception):
                await conn.disconnect(nowait=True)

    def _drop(self) -> None:
        """Synchronous, so no writer sees a half-dropped state: waiters move to the next connection."""
        self.live = False
        self.down.set()
        self._conn = None
        self._confirmed.clear()
        for channel, entries in self._in_flight.items():
            for entry in entries:
                self._deferred.setdefault(channel, []).extend(w for w in entry if not w.done())
        self._in_flight.clear()
        while self._pongs:
            self._pongs.popleft().cancel()

    async def _read_forever(self, conn: AbstractConnection) -> None:
        while True:
            # The pool gives this connection no socket timeout: the pinger bounds how long a
            # silent connection is trusted.
            self._handle(await conn.read_response())

    async def _ping_forever(self, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PUBSUB_PING_INTERVAL_SECONDS)
            pong: asyncio.Future[None] = loop.create_future()
            async with self._lock:
                self._pongs.append(pong)
                await self._send(conn, "PING")
            try:
                async with asyncio.timeout(PUBSUB_PING_TIMEOUT_SECONDS):
                    await pong
            except TimeoutError:
                raise _ConnectionLost(f"no answer to PING within {PUBSUB_PING_TIMEOUT_SECONDS:g}s") from None


class RedisBroker(Broker):
    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        if not settings.redis_url:
            raise ValueError("RedisBroker needs settings.redis_url")
        url = settings.redis_url
        self._prefix = settings.key_prefix
        self._redis = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=COMMAND_POOL_MAX_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                socket_timeout=None,  # see the module docstring: bounded by OPERATION_TIMEOUT_SECONDS
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                retry=_no_retry(),
                protocol=RESP_VERSION,
            )
        )
        self._blocking = Redis.from_pool(
            BlockingConnectionPool.from_url(
                url,
                max_connections=BLOCKING_POOL_MAX_CONNECTIONS,
                timeout=POOL_WAIT_SECONDS,
                socket_timeout=None,  # bounded per claim by BLOCK + CLAIM_READ_GRACE_SECONDS
                socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
                retry=_no_retry(),
                protocol=RESP_VERSION,
            )
        )
        self._pubsub_pool = ConnectionPool.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=CONNECT_TIMEOUT_SECONDS,
            retry=_no_retry(),
            protocol=RESP_VERSION,
        )
        self._subscriptions = _Subscriptions(self._pubsub_pool, self._prefix, self._deliver, self._after_reconnect)
        self._store_script = self._redis.register_script(STORE_RUN_SCRIPT)
        self._append_script = self._redis.register_script(APPEND_CHUNKS_SCRIPT)
        self._send_input_script = self._redis.register_script(SEND_INPUT_SCRIPT)
        self._idempotency_script = self._redis.register_script(CLAIM_IDEMPOTENCY_SCRIPT)
        self._heartbeat_script = self._redis.register_script(HEARTBEAT_SCRIPT)
        self._claim_script = self._redis.register_script(CLAIM_SCRIPT)
        self._requeue_script = self._redis.register_script(REQUEUE_SCRIPT)
        self._complete_waitpoint_script = self._redis.register_script(COMPLETE_WAITPOINT_SCRIPT)
        self._read_chunks_script = self._redis.register_script(READ_CHUNKS_SCRIPT)
        self._retention_ms = max(1, int(settings.retention_seconds * 1000))
        self._registered: set[str] = set()  # task ids registered through this broker
        self._groups: set[str] = set()  # streams known to have the consumer group
        # Per worker id claiming through this broker (one per Worker in the process): the streams
        # it claims from (what it reclaims from) and the stream its next claim tries first.
        self._worker_streams: dict[str, set[str]] = {}
        self._turns: dict[str, int] = {}
        self._next_prune = 0.0
        self._started = False

    # keys and channels
    def _run_key(self, run_id: str) -> str:
        return f"{self._prefix}:{{{run_id}}}:run"

    def _tag_key(self, tag: str) -> str:
        return f"{self._prefix}:{{tag:{tag}}}:runs"

    def _batch_key(self, batch_id: str) -> str:
        return f"{self._prefix}:{{batch:{batch_id}}}:runs"

    def _idempotency_key(self, scope: str) -> str:
        return f"{self._prefix}:{{idem:{scope}}}"

    def _once_key(self, key: str) -> str:
        return f"{self._prefix}:{{once:{key}}}"

    def _value_key(self, key: str) -> str:
        return f"{self._prefix}:{{value:{key}}}"

    def _tasks_key(self) -> str:
        return f"{self._prefix}:{{tasks}}"

    def _stream_key(self, task_id: str) -> str:
        return f"{self._prefix}:{{queue}}:task:{task_id}"

    def _output_stream_key(self, run_id: str, key: str) -> str:
        return f"{self._prefix}:{{{run_id}}}:stream:{key}"

    def _waitpoint_key(self, token_id: str) -> str:
        return f"{self._prefix}:{{{token_id}}}:waitpoint"

    def _deadlines_key(self) -> str:
        return f"{self._prefix}:{{waitpoints}}:deadlines"

    def _wire(self, channel: str) -> str:
        return f"{self._prefix}:{channel}"

    # lifecycle
    async def start(self) -> None:
        """Opens the pub/sub connection (or starts retrying it in the background, with Redis down)."""
        await self._subscriptions.start()
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await self._subscriptions.close()
        await self._blocking.aclose()
        await self._redis.aclose()
        await self._pubsub_pool.disconnect()

    async def ping(self) -> None:
        if self._started and not self._subscriptions.live:
            raise BackendUnavailableError("Redis is unavailable: the notification connection is reconnecting")
        async with _unavailable("PING"):
            await self._redis.ping()

    def _deliver(self, channel: str, data: bytes) -> None:
        self._on_message(channel, data)  # looked up per message: set_listener may come after start

    async def _after_reconnect(self, resync: bool) -> None:
        if resync:
            self._groups.clear()  # Redis may have lost its data: recreate consumer groups when needed
            if self._registered:
                try:
                    await self.register_tasks(sorted(self._registered))
                except BackendUnavailableError as exc:
                    log.warning("could not re-register tasks after reconnecting: %s", exc.message)
            self._on_resync()

    # runs
    async def insert_run(self, run: Run, idempotency_scope: str | None, idempotency_ttl: float) -> tuple[Run, bool]:
        async with _unavailable("storing a run"):
            if idempotency_scope:
                existing = await self._take_idempotency_scope(idempotency_scope, run.id, idempotency_ttl, self.get_run)
                if existing is not None:
                    return existing, False
            # Index first: a listener that attached and then reads an index never misses the run.
            if run.tags or run.batch_id:
                cutoff = now_ms() - self._retention_ms
                async with self._redis.pipeline(transaction=False) as pipe:
                    for tag in run.tags:
                        key = self._tag_key(tag)
                        pipe.zadd(key, {run.id: run.created_at})
                        pipe.zremrangebyscore(key, "-inf", f"({cutoff}")
                        pipe.pexpire(key, self._retention_ms)
                    if run.batch_id:
                        key = self._batch_key(run.batch_id)
                        pipe.rpush(key, run.id)
                        pipe.ltrim(key, 0, BATCH_INDEX_MAX_RUNS - 1)
                        pipe.pexpire(key, self._retention_ms)
                    await pipe.execute()
            if not await self._store(run, expected_version=0):
                raise ConflictError(f"run {run.id} already exists")
            return run, True

    async def _take_idempotency_scope(
        self, scope: str, owner_id: str, ttl: float, load: Callable[[str], Awaitable[T | None]]
    ) -> T | None:
        """None once the scope is `owner_id`'s; else what `load` finds of the run or token owning it."""
        key = self._idempotency_key(scope)
        ttl_ms = max(1, int(ttl * 1000))
        stale = ""
        for _ in range(IDEMPOTENCY_ATTEMPTS):
            owner = await self._idempotency_script(keys=[key], args=[owner_id, ttl_ms, stale])
            if owner is None:
                return None
            current_owner = _text(owner)
            deadline = time.monotonic() + IDEMPOTENCY_SETTLE_SECONDS
            while True:  # a concurrent insert stores its run or token right after taking the scope
                existing = await load(current_owner)
                if existing is not None:
                    return existing
                if time.monotonic() >= deadline:
                    break
                await asyncio.sleep(IDEMPOTENCY_POLL_SECONDS)
            stale = current_owner  # its insert failed (or it expired): take the scope over
        raise ConflictError(f"idempotency key {scope!r} is contended; try again")

    async def _store(self, run: Run, expected_version: int) -> bool:
        args: list[str | int | bytes] = [
            expected_version,
            run.version,
            run.to_storage(),
            self._retention_ms,
            "1" if run.status.is_final else "0",
            *(self._wire(c) for c in channels_of(run)),
        ]
        return bool(await self._store_script(keys=[self._run_key(run.id)], args=args))

    async def get_run(self, run_id: str) -> Run | None:
        async with _unavailable("reading a run"):
            raw = await self._redis.hget(self._run_key(run_id), "data")
        return Run.from_storage(raw) if raw is not None else None

    async def replace_run(self, run: Run, expected_version: int) -> bool:
        async with _unavailable("storing a run"):
            return await self._store(run, expected_version)

    async def _fetch_runs(self, run_ids: Sequence[str]) -> list[Run]:
        """The runs still stored, in the given order (expired ones are dropped)."""
        runs: list[Run] = []
        for chunk in _chunks(run_ids, FETCH_CHUNK):
            async with self._redis.pipeline(transaction=False) as pipe:
                for run_id in chunk:
                    pipe.hget(self._run_key(run_id), "data")
                raws: list[bytes | None] = await pipe.execute()
            runs.extend(Run.from_storage(raw) for raw in raws if raw is not None)
        return runs

    async def runs_with_tags(self, tags: list[str], since_ms: int, limit: int) -> list[Run]:
        keys = [self._tag_key(tag) for tag in dict.fromkeys(tags)]
        if not keys or limit <= 0:
            return []
        async with _unavailable("reading a tag index"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.zcount(key, since_ms, "+inf")
                counts: list[int] = await pipe.execute()
            if min(counts) == 0:
                return []
            # Scan the smallest index newest first; keep members that every other index has.
            smallest, *others = [key for _, key in sorted(zip(counts, keys, strict=True))]
            found: list[Run] = []
            seen: set[str] = set()
            offset = 0
            while len(found) < limit and offset < TAG_SCAN_MAX_MEMBERS:
                page = await self._redis.zrevrangebyscore(smallest, "+inf", since_ms, start=offset, num=TAG_SCAN_PAGE)
                offset += len(page)
                ids = [rid for rid in map(_text, page) if rid not in seen]
                seen.update(ids)
                if others and ids:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key in others:
                            pipe.zmscore(key, ids)
                        scores: list[list[float | None]] = await pipe.execute()
                    ids = [rid for i, rid in enumerate(ids) if all(s[i] is not None for s in scores)]
                for run in await self._fetch_runs(ids):
                    if run.created_at >= since_ms and len(found) < limit:
                        found.append(run)
                if len(page) < TAG_SCAN_PAGE:
                    break
            return found

    async def runs_in_batch(self, batch_id: str) -> list[Run]:
        async with _unavailable("reading a batch index"):
            ids = await self._redis.lrange(self._batch_key(batch_id), 0, BATCH_INDEX_MAX_RUNS - 1)
            return await self._fetch_runs([_text(i) for i in ids])

    # change notification
    # output streams
    async def append_chunks(self, run_id: str, key: str, chunks: Sequence[bytes]) -> int:
        args: list[str | int | bytes] = [self._retention_ms, self._wire(stream_channel(run_id, key)), *chunks]
        async with _unavailable("appending to a stream"):
            first = await self._append_script(keys=[self._output_stream_key(run_id, key)], args=args)
        return int(first)

    async def append_input(self, run_id: str, key: str, data: bytes) -> int:
        args: list[str | int | bytes] = [self._retention_ms, self._wire(stream_channel(run_id, key)), data]
        keys = [self._run_key(run_id), self._output_stream_key(run_id, key)]
        async with _unavailable("sending to an input stream"):
            index = int(await self._send_input_script(keys=keys, args=args))
        if index == -1:
            raise NotFoundError(f"Run not found: {run_id}")
        if index == -2:
            raise RunFinishedError("Cannot send to input stream on a completed run")
        return index

    async def read_chunks(self, run_id: str, key: str, start: int, count: int, max_bytes: int) -> list[bytes]:
        args: list[str | int] = [f"0-{start + 1}", count, max_bytes]
        async with _unavailable("reading a stream"):
            page = await self._read_chunks_script(keys=[self._output_stream_key(run_id, key)], args=args)
        return cast(list[bytes], page)

    async def stream_length(self, run_id: str, key: str) -> int:
        async with _unavailable("reading a stream's length"):
            return int(await self._redis.xlen(self._output_stream_key(run_id, key)))

    async def listen(self, channels: Iterable[str]) -> None:
        await self._subscriptions.listen(channels)

    async def unlisten(self, channels: Iterable[str]) -> None:
        await self._subscriptions.unlisten(channels)

    async def publish(self, channel: str, data: bytes) -> None:
        async with _unavailable("publishing"):
            await self._redis.publish(self._wire(channel), data)

    # task queue
    async def enqueue(self, task_id: str, run_id: str) -> None:
        async with _unavailable("enqueueing a run"):
            await self._redis.xadd(self._stream_key(task_id), {"run": run_id})

    async def _ensure_groups(self, streams: Iterable[str]) -> None:
        for stream in streams:
            if stream in self._groups:
                continue
            try:
                await self._redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
            self._groups.add(stream)

    async def claim(self, worker_id: str, task_ids: list[str], timeout: float) -> Delivery | None:
        streams = [self._stream_key(task_id) for task_id in dict.fromkeys(task_ids)]
        if not streams:
            await asyncio.sleep(timeout)
            return None
        self._worker_streams.setdefault(worker_id, set()).update(streams)
        async with _unavailable("claiming a run", OPERATION_TIMEOUT_SECONDS + timeout + CLAIM_READ_GRACE_SECONDS):
            await self._ensure_groups(streams)
            try:
                return await self._claim(worker_id, streams, timeout)
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                self._groups.difference_update(streams)  # Redis lost its data: recreate, claim again
                await self._ensure_groups(streams)
                return await self._claim(worker_id, streams, timeout)

    async def _claim(self, worker_id: str, streams: list[str], timeout: float) -> Delivery | None:
        turn = self._turns.get(worker_id, 0) % len(streams)
        self._turns[worker_id] = turn + 1
        ordered = streams[turn:] + streams[:turn]
        found = await self._claim_script(keys=ordered, args=[CONSUMER_GROUP, worker_id])
        if found:
            index, entry_id, run_id = found
            return Delivery(run_id=_text(run_id), receipt=f"{_text(entry_id)}|{ordered[int(index) - 1]}")

        block_ms = max(1, int(timeout * 1000))  # BLOCK 0 would wait forever
        async with asyncio.timeout(timeout + CLAIM_READ_GRACE_SECONDS):
            response = await self._blocking.xreadgroup(
                CONSUMER_GROUP, worker_id, dict.fromkeys(ordered, ">"), count=1, block=block_ms
            )
        if not isinstance(response, list):  # RESP2 (RESP_VERSION): [[stream, [(id, fields), ...]], ...]
            raise ResponseError(f"unexpected XREADGROUP reply: {type(response).__name__}")
        deliveries = [
            Delivery(run_id=_text(fields.get(b"run", b"")), receipt=f"{_text(entry_id)}|{_text(stream)}")
            for stream, entries in response or []
            for entry_id, fields in entries
            if fields
        ]
        for extra in deliveries[1:]:
            entry, stream = self._parse_receipt(extra.receipt)
            try:
                await self._requeue_script(keys=[stream], args=[CONSUMER_GROUP, entry, extra.run_id])
            except (RedisError, OSError) as exc:  # still pending: reclaimed after a lease
                log.warning("could not put run %s back in its queue: %s", extra.run_id, exc)
        return deliveries[0] if deliveries else None

    @staticmethod
    def _parse_receipt(receipt: str) -> tuple[str, str]:
        entry_id, _, stream = receipt.partition("|")
        return entry_id, stream

    async def ack(self, delivery: Delivery) -> None:
        entry_id, stream = self._parse_receipt(delivery.receipt)
        async with _unavailable("acknowledging a run"), self._redis.pipeline(transaction=True) as pipe:
            pipe.xack(stream, CONSUMER_GROUP, entry_id)
            pipe.xdel(stream, entry_id)
            await pipe.execute()

    async def heartbeat(self, worker_id: str, deliveries: Iterable[Delivery]) -> None:
        items = list(deliveries)
        async with _unavailable("heartbeating"):
            for chunk in _chunks(items, HEARTBEAT_CHUNK):
                receipts = [self._parse_receipt(d.receipt) for d in chunk]
                await self._heartbeat_script(
                    keys=[stream for _, stream in receipts],
                    args=[CONSUMER_GROUP, worker_id, *(entry_id for entry_id, _ in receipts)],
                )

    async def reclaim_abandoned(self, worker_id: str) -> list[Delivery]:
        """Entries of the streams this worker claims from, idle for a lease (their worker stopped heartbeating)."""
        streams = sorted(self._worker_streams.get(worker_id, ()))
        min_idle_ms = max(1, int(self.settings.lease_seconds * 1000))
        reclaimed: list[Delivery] = []
        async with _unavailable("reclaiming abandoned runs"):
            for stream in streams:
                try:
                    response = await self._redis.xautoclaim(
                        stream,
                        CONSUMER_GROUP,
                        worker_id,
                        min_idle_time=min_idle_ms,
                        start_id="0-0",
                        count=RECLAIM_COUNT,
                    )
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        continue
                    raise
                for entry_id, fields in response[1]:
                    if fields and b"run" in fields:
                        receipt = f"{_text(entry_id)}|{stream}"
                        reclaimed.append(Delivery(run_id=_text(fields[b"run"]), receipt=receipt))
            if time.monotonic() >= self._next_prune:
                self._next_prune = time.monotonic() + CONSUMER_PRUNE_INTERVAL_SECONDS
                await self._prune_consumers(streams, worker_id)
        return reclaimed

    async def _prune_consumers(self, streams: list[str], worker_id: str) -> None:
        """Removes consumers of dead workers (nothing pending, long idle), so groups stay small."""
        idle_ms = CONSUMER_PRUNE_IDLE_LEASES * self.settings.lease_seconds * 1000
        for stream in streams:
            try:
                consumers = await self._redis.xinfo_consumers(stream, CONSUMER_GROUP)
            except ResponseError:
                continue
            for consumer in consumers:
                name = _text(consumer["name"])
                if name != worker_id and int(consumer["pending"]) == 0 and int(consumer["idle"]) > idle_ms:
                    await self._redis.xgroup_delconsumer(stream, CONSUMER_GROUP, name)

    # wait tokens
    async def insert_waitpoint(
        self,
        token_id: str,
        spec: bytes,
        timeout_at_ms: int,
        ttl: float,
        idempotency_scope: str | None,
        idempotency_ttl: float,
    ) -> tuple[str, bool]:
        async with _unavailable("storing a wait token"):
            if idempotency_scope:
                existing = await self._take_idempotency_scope(
                    idempotency_scope, token_id, idempotency_ttl, self._stored_waitpoint_id
                )
                if existing is not None:
                    return existing, False
            # The deadline first: a token is never stored without it (an entry whose token was not
            # stored is dropped by the first timer that finds it due).
            await self._redis.zadd(self._deadlines_key(), {token_id: timeout_at_ms})
            key = self._waitpoint_key(token_id)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(key, "spec", spec)
                pipe.pexpire(key, max(1, int(ttl * 1000)))
                await pipe.execute()
            return token_id, True

    async def _stored_waitpoint_id(self, token_id: str) -> str | None:
        return token_id if await self._redis.exists(self._waitpoint_key(token_id)) else None

    async def get_waitpoint(self, token_id: str) -> tuple[bytes, bytes | None] | None:
        async with _unavailable("reading a wait token"):
            spec, result = await self._redis.hmget(self._waitpoint_key(token_id), ["spec", "result"])
        return (cast(bytes, spec), cast(bytes | None, result)) if spec is not None else None

    async def complete_waitpoint(self, token_id: str, result: bytes, ttl: float) -> bytes | None:
        args: list[str | int | bytes] = [result, max(1, int(ttl * 1000)), self._wire(waitpoint_channel(token_id))]
        async with _unavailable("completing a wait token"):
            stored = await self._complete_waitpoint_script(keys=[self._waitpoint_key(token_id)], args=args)
        return cast(bytes | None, stored)

    async def due_waitpoints(self, now_ms: int, limit: int) -> list[str]:
        async with _unavailable("reading wait token deadlines"):
            ids = await self._redis.zrangebyscore(self._deadlines_key(), "-inf", now_ms, start=0, num=limit)
        return [_text(i) for i in ids]

    async def next_waitpoint_deadline(self) -> int | None:
        async with _unavailable("reading wait token deadlines"):
            first = await self._redis.zrange(self._deadlines_key(), 0, 0, withscores=True)
        return int(first[0][1]) if first else None

    async def forget_waitpoint_deadline(self, token_id: str) -> None:
        async with _unavailable("removing a wait token deadline"):
            await self._redis.zrem(self._deadlines_key(), token_id)

    # small shared state
    async def claim_once(self, key: str, ttl: float) -> bool:
        async with _unavailable("claiming a one-time key"):
            return bool(await self._redis.set(self._once_key(key), b"1", nx=True, px=max(1, int(ttl * 1000))))

    async def put_value(self, key: str, value: bytes, ttl: float) -> None:
        async with _unavailable("storing a value"):
            await self._redis.set(self._value_key(key), value, px=max(1, int(ttl * 1000)))

    async def get_value(self, key: str) -> bytes | None:
        async with _unavailable("reading a value"):
            return cast(bytes | None, await self._redis.get(self._value_key(key)))

    async def register_tasks(self, task_ids: Iterable[str]) -> None:
        ids = list(task_ids)
        if not ids:
            return
        self._registered.update(ids)
        async with _unavailable("registering tasks"):
            await self._redis.sadd(self._tasks_key(), *ids)

    async def task_exists(self, task_id: str) -> bool:
        async with _unavailable("looking up a task"):
            return bool(await self._redis.sismember(self._tasks_key(), task_id))
