"""The broker's pub/sub session: confirmed subscriptions, liveness and reconnection.

A session is one connection per node of the layout (nodes.py: one Redis, or every master of a
cluster, each channel on the master owning its slot). `listen` returns once Redis confirmed the
subscription. When any connection of the session drops, stops answering PING, or (in a cluster)
loses a channel's slot (a `sunsubscribe` Redis sends when the slot moved, or an error reply such as
MOVED), the whole session ends; the next one, after capped exponential backoff with jitter, reads
the layout again (following a failover), resubscribes every channel, and only then is the broker
told to resync its listeners, who re-read what they follow: nothing published meanwhile is missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from bridge.aio import cancel_and_wait
from bridge.backends.redis.connection import CONNECT_TIMEOUT_SECONDS, OPERATION_TIMEOUT_SECONDS, chunks, text
from bridge.backends.redis.keys import Keys
from bridge.backends.redis.nodes import SHARDED, Layout, PubSubNodes
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
    """The broker's pub/sub session and the channels it should be subscribed to.

    Channels are held by their wire names (`keys.wire`). `_wanted` counts `listen` calls per channel:
    it is what every new session subscribes to. A SUBSCRIBE in flight has an entry in `_in_flight`
    (a FIFO per channel, matching Redis's in-order replies on the channel's one connection) holding
    the futures of the `listen` calls waiting for its confirmation. Waiters of a session that ended
    move to `_deferred` and are confirmed by the next session's resubscription.
    """

    def __init__(
        self,
        nodes: PubSubNodes,
        keys: Keys,
        dispatch: Callable[[str, bytes], None],
        reconnected: Callable[[bool], Awaitable[None]],
    ) -> None:
        self._nodes = nodes
        self._commands = nodes.commands
        self._keys = keys
        self._dispatch = dispatch
        self._reconnected = reconnected  # called with resync=True after every reconnection but the first
        self._channels: dict[str, str] = {}  # wire name -> channel, for every wanted one
        self._wanted: dict[str, int] = {}
        self._confirmed: set[str] = set()
        self._in_flight: dict[str, deque[list[asyncio.Future[None]]]] = {}
        self._deferred: dict[str, list[asyncio.Future[None]]] = {}
        self._unsubscribing: dict[str, int] = {}  # UNSUBSCRIBEs sent in this session, not answered yet
        self._pongs: dict[str, deque[asyncio.Future[None]]] = {}  # per node
        self._layout: Layout | None = None  # the session's, once it subscribed
        self._conns: dict[str, AbstractConnection] = {}  # per node, once the session subscribed
        self._lock = asyncio.Lock()  # serialises writes to the connections
        self._was_live = False
        self._sessions = 0
        self._first_attempt = asyncio.Event()
        self._outage = OutageLog(log, "Redis pub/sub connection")
        self._task: asyncio.Task[None] | None = None
        self.live = False
        self.down = asyncio.Event()  # set while no session is live (tests await it)
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
                    wire = self._keys.wire(channel)
                    count = self._wanted.get(wire, 0)
                    self._wanted[wire] = count + 1
                    self._channels[wire] = channel
                    added.append(channel)
                    if wire in self._confirmed:
                        continue
                    waiter: asyncio.Future[None] = loop.create_future()
                    waiters.append(waiter)
                    in_flight = self._in_flight.get(wire)
                    if self._layout is None:
                        self._deferred.setdefault(wire, []).append(waiter)
                    elif count and in_flight:
                        in_flight[-1].append(waiter)  # a SUBSCRIBE for it is on its way: wait for that one
                    else:
                        self._in_flight.setdefault(wire, deque()).append([waiter])
                        to_send.append(wire)
                if to_send:
                    await self._send_quietly(self._commands.subscribe, to_send)
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
            wire = self._keys.wire(channel)
            count = self._wanted.get(wire, 0)
            if count > 1:
                self._wanted[wire] = count - 1
            elif count == 1:
                del self._wanted[wire], self._channels[wire]
                self._confirmed.discard(wire)
                gone.append(wire)
        if gone:
            async with self._lock:
                if self._layout is not None:
                    for wire in gone:
                        self._unsubscribing[wire] = self._unsubscribing.get(wire, 0) + 1
                await self._send_quietly(self._commands.unsubscribe, gone)

    async def _send(
        self, layout: Layout, conns: dict[str, AbstractConnection], command: str, wires: Sequence[str]
    ) -> None:
        """Sends `command` for `wires`, each to the connection of its node, as few commands as may carry them."""
        async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
            for node, groups in layout.groups(wires).items():
                conn = conns[node]
                if not conn.is_connected:  # never let redis-py reconnect this connection behind our back
                    raise _ConnectionLost("the pub/sub connection is closed")
                batches = [chunk for group in groups for chunk in chunks(group, SUBSCRIBE_CHUNK)]
                await conn.send_packed_command(conn.pack_commands([command, *b] for b in batches), check_health=False)

    async def _send_quietly(self, command: str, wires: Sequence[str]) -> None:
        """Nothing without a live session (the next one subscribes what is wanted then). A failed write
        means a failed connection: its reader or pinger ends the session."""
        if self._layout is None:
            return
        try:
            await self._send(self._layout, self._conns, command, wires)
        except (RedisError, OSError, _ConnectionLost) as exc:
            log.debug("pub/sub %s not sent: %s", command, exc)

    # incoming frames
    def _handle(self, node: str, frame: Any) -> None:
        if isinstance(frame, list) and frame:
            kind = frame[0]
            if kind == self._commands.message and len(frame) == 3:
                channel = self._channels.get(text(frame[1]))
                if channel is not None:
                    try:
                        self._dispatch(channel, bytes(frame[2]))
                    except Exception:
                        log.exception("message handler failed on %s", channel)
            elif kind == self._commands.subscribed and len(frame) >= 2:
                self._on_subscribed(text(frame[1]))
            elif kind == self._commands.unsubscribed and len(frame) >= 2:
                self._on_unsubscribed(text(frame[1]))
            elif kind == b"pong":
                self._on_pong(node)
        elif frame == b"PONG":  # PING outside subscribed mode (no channel wanted on that connection)
            self._on_pong(node)

    def _on_subscribed(self, wire: str) -> None:
        entries = self._in_flight.get(wire)
        if entries:
            for waiter in entries.popleft():
                if not waiter.done():
                    waiter.set_result(None)
            if not entries:
                del self._in_flight[wire]
        if wire not in self._in_flight and wire in self._wanted:
            self._confirmed.add(wire)  # confirmed by the latest SUBSCRIBE sent for it

    def _on_unsubscribed(self, wire: str) -> None:
        pending = self._unsubscribing.get(wire, 0)
        if pending > 1:
            self._unsubscribing[wire] = pending - 1
        elif pending == 1:
            del self._unsubscribing[wire]
        elif self._commands is SHARDED and wire in self._wanted:
            # Not an answer: a cluster node dropped a channel we still want, because its slot moved.
            raise _ConnectionLost(f"the slot of {wire} moved")

    def _on_pong(self, node: str) -> None:
        pongs = self._pongs.get(node)
        while pongs:
            pong = pongs.popleft()
            if not pong.done():
                pong.set_result(None)
                return

    # the session's life
    async def _run_forever(self) -> None:
        failures = 0
        while True:
            sessions = self._sessions
            try:
                await self._session()
            except (RedisError, OSError, _ConnectionLost) as exc:
                self._outage.failed(str(exc) or type(exc).__name__)
            except Exception:
                log.exception("Redis pub/sub connection failed; reconnecting")
            finally:
                self._first_attempt.set()
            failures = 0 if self._sessions != sessions else failures + 1
            await asyncio.sleep(reconnect_delay(failures))

    async def _session(self) -> None:
        loop = asyncio.get_running_loop()
        handshake: list[asyncio.Future[None]] = []
        conns: dict[str, AbstractConnection] = {}
        tasks: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout(PUBSUB_OPEN_TIMEOUT_SECONDS):
                layout = await self._nodes.layout()
                conns = {node: connect() for node, connect in layout.connections.items()}
                await asyncio.gather(*(conn.connect() for conn in conns.values()))  # type: ignore[no-untyped-call]
                async with self._lock:
                    for wire in self._wanted:
                        waiter: asyncio.Future[None] = loop.create_future()
                        handshake.append(waiter)
                        earlier = [w for w in self._deferred.pop(wire, []) if not w.done()]
                        self._in_flight[wire] = deque([[waiter, *earlier]])
                    for waiters in self._deferred.values():  # channels unwanted since: their listen gave up
                        for waiter in waiters:
                            waiter.cancel()
                    self._deferred.clear()
                    await self._send(layout, conns, self._commands.subscribe, list(self._wanted))
                    self._layout, self._conns = layout, conns
                    self._pongs = {node: deque() for node in conns}
                readers = [
                    asyncio.create_task(self._read_forever(node, conn), name=f"redis-broker-pubsub-reader {node}")
                    for node, conn in conns.items()
                ]
                tasks.extend(readers)
                if handshake:
                    confirmed = asyncio.gather(*handshake)
                    tasks.append(confirmed)
                    ends: list[asyncio.Future[Any]] = [*readers, confirmed]
                    await asyncio.wait(ends, return_when=asyncio.FIRST_COMPLETED)
                    for reader in readers:
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
            pingers = [
                asyncio.create_task(self._ping_forever(node, conn), name=f"redis-broker-pubsub-pinger {node}")
                for node, conn in conns.items()
            ]
            tasks.extend(pingers)
            done, _ = await asyncio.wait([*readers, *pingers], return_when=asyncio.FIRST_COMPLETED)
            for ended in done:
                ended.result()
            raise _ConnectionLost("the connection closed")
        finally:
            self._drop()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for conn in conns.values():
                with contextlib.suppress(Exception):
                    await conn.disconnect(nowait=True)

    def _drop(self) -> None:
        """Synchronous, so no writer sees a half-dropped state: waiters move to the next session."""
        self.live = False
        self.down.set()
        self._layout, self._conns = None, {}
        self._confirmed.clear()
        for wire, entries in self._in_flight.items():
            for entry in entries:
                self._deferred.setdefault(wire, []).extend(w for w in entry if not w.done())
        self._in_flight.clear()
        self._unsubscribing.clear()
        for pongs in self._pongs.values():
            while pongs:
                pongs.popleft().cancel()

    async def _read_forever(self, node: str, conn: AbstractConnection) -> None:
        while True:
            # No socket timeout on these connections: the pinger bounds how long a silent one is trusted.
            self._handle(node, await conn.read_response())

    async def _ping_forever(self, node: str, conn: AbstractConnection) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(PUBSUB_PING_INTERVAL_SECONDS)
            pong: asyncio.Future[None] = loop.create_future()
            async with self._lock:
                self._pongs[node].append(pong)
                if not conn.is_connected:
                    raise _ConnectionLost("the pub/sub connection is closed")
                async with asyncio.timeout(COMMAND_TIMEOUT_SECONDS):
                    await conn.send_command("PING", check_health=False)
            try:
                async with asyncio.timeout(PUBSUB_PING_TIMEOUT_SECONDS):
                    await pong
            except TimeoutError:
                raise _ConnectionLost(f"no answer to PING within {PUBSUB_PING_TIMEOUT_SECONDS:g}s") from None
