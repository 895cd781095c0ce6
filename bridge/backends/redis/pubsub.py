"""The broker's one pub/sub connection: confirmed subscriptions, liveness and reconnection.

`listen` returns once Redis confirmed the subscription; a dropped connection (or one that stops
answering PING) is replaced with capped exponential backoff and jitter, every channel is
resubscribed, and only then is the broker told to resync its listeners.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.asyncio import ConnectionPool
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from bridge.aio import cancel_and_wait
from bridge.backends.redis.connection import CONNECT_TIMEOUT_SECONDS, OPERATION_TIMEOUT_SECONDS, chunks, text
from bridge.backends.redis.keys import Keys
from bridge.errors import BackendUnavailableError
from bridge.outages import OutageLog

log = logging.getLogger(__name__)

COMMAND_TIMEOUT_SECONDS = 5.0  # one write to the pub/sub connection
RECONNECT_BACKOFF_BASE_SECONDS = 0.05  # first retry after a drop: 25-50 ms (jitter: x0.5-1.0)
RECONNECT_BACKOFF_CAP_SECONDS = 5.0  # retries never wait longer than this
PUBSUB_PING_INTERVAL_SECONDS = 5.0  # a PING this often detects a connection that died silently...
PUBSUB_PING_TIMEOUT_SECONDS = 3.0  # ...when its answer takes longer than this
PUBSUB_OPEN_TIMEOUT_SECONDS = CONNECT_TIMEOUT_SECONDS + OPERATION_TIMEOUT_SECONDS  # connect and handshake
LISTEN_TIMEOUT_SECONDS = 5.0  # `listen` waits this long for Redis's confirmation (or for a reconnection)
SUBSCRIBE_CHUNK = 500  # channels per SUBSCRIBE/UNSUBSCRIBE command


def reconnect_delay(failures: int) -> float:
    """Capped exponential backoff with jitter: 25-50 ms after the first failure, at most the cap."""
    ceiling = min(RECONNECT_BACKOFF_CAP_SECONDS, RECONNECT_BACKOFF_BASE_SECONDS * 2.0 ** min(failures, 16))
    return ceiling * random.uniform(0.5, 1.0)


class _ConnectionLost(Exception):
    """The pub/sub connection ended or stopped answering."""


class Subscriptions:
    """The broker's one pub/sub connection and the channels it should be subscribed to.

    `_wanted` counts `listen` calls per channel: it is what every new connection subscribes to.
    A SUBSCRIBE in flight has an entry in `_in_flight` (a FIFO per channel, matching Redis's
    in-order replies) holding the futures of the `listen` calls waiting for its confirmation.
    Waiters of a connection that dropped move to `_deferred` and are confirmed by the next
    connection's resubscription.
    """

    def __init__(
        self,
        pool: ConnectionPool,
        keys: Keys,
        dispatch: Callable[[str, bytes], None],
        reconnected: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._pool = pool
        self._prefix = keys.wire("")  # what every channel name on the wire starts with
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
        self._outage = OutageLog(log, "Redis pub/sub connection")
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
            for chunk in chunks(channels, SUBSCRIBE_CHUNK):
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
                name = text(frame[1])
                if name.startswith(self._prefix):
                    channel = name[len(self._prefix) :]
                    if channel in self._wanted:
                        try:
                            self._dispatch(channel, bytes(frame[2]))
                        except Exception:
                            log.exception("message handler failed on %s", channel)
            elif kind == b"subscribe" and len(frame) >= 2:
                self._on_subscribed(text(frame[1])[len(self._prefix) :])
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
                self._outage.failed(str(exc) or type(exc).__name__)
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
            self._outage.recovered()
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
