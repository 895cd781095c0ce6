"""One WebSocket connection: the receive loop, how frames leave (written at once, or queued in the
outbox), the subscriptions' lifecycle, and the close codes.

Frames are prepared WebSocket frames (`transport.text_frame`). Served by `FramesProtocol` (the raw path),
a frame is written to the transport synchronously by whoever produced it, as long as nothing is queued
before it and the transport's buffer is under its high water; otherwise it waits in the outbox (coalesced
per (topic, run) for run feeds) until the transport resumes writing, which drains it, oldest first. Once
anything is queued, every later frame queues behind it: none overtakes another. Without the raw path (the
bridge mounted under another server), every frame goes through the outbox and a sender task that sends it
through ASGI.

A reader that stops reading altogether — the outbox over its bounds, or (raw path) the transport not
drained for the grace period, one timer armed when it pauses, or (ASGI) one send blocked for the grace — is
closed with code 4008 and its memory freed. A client that sends faster than it reads is throttled instead:
no frame of it is received while the outbox is over its high watermark.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Coroutine, Hashable
from typing import Any

import orjson
from prometheus_client import Counter
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bridge.errors import BridgeError, PayloadTooLargeError
from bridge.runtime.access import Principal
from bridge.runtime.core import Bridge
from bridge.runtime.feeds import FeedSpec
from bridge.server.topics import TopicRouter
from bridge.server.websocket.dispatch import handle_frame
from bridge.server.websocket.outbox import Outbox
from bridge.server.websocket.protocol import (
    CLOSE_MESSAGE_TOO_BIG,
    CLOSE_SLOW_CONSUMER,
    error_frame,
    welcome_frame,
)
from bridge.server.websocket.subscriptions import (
    AnySubscription,
    FeedSubscription,
    StreamRequest,
    StreamSubscription,
    Subscriptions,
    pump_stream,
    snapshot_frame,
)
from bridge.server.websocket.transport import FRAMES_EXTENSION, Frames, frame_payload, payload_size, text_frame

ACK_FLUSH_SECONDS = 2.0  # at most this long an input ack waits for the connection's streams of that run
STREAM_QUEUE_FRAMES = 128  # a stream subscription pushes a chunk only while the outbox holds fewer frames


class Connection:
    def __init__(self, websocket: WebSocket, bridge: Bridge, router: TopicRouter) -> None:
        self.websocket = websocket
        self.bridge = bridge
        self.router = router
        self.limits = bridge.settings.limits
        self.metrics = bridge.metrics
        self.subscriptions = Subscriptions(
            self.limits.max_subscriptions_per_connection, self.metrics.websocket_subscriptions
        )
        self._room = asyncio.Event()  # set by the outbox once paused stream pumps may push again
        self.outbox = Outbox(
            max_frames=self.limits.send_queue_max_frames,
            max_bytes=self.limits.send_queue_max_bytes,
            high_frames=max(1, min(STREAM_QUEUE_FRAMES, self.limits.send_queue_max_frames // 2)),
            high_bytes=max(1, self.limits.send_queue_max_bytes // 2),
            on_room=self._room.set,
        )
        self._ready = asyncio.Event()
        self._closing: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        extensions = websocket.scope.get("extensions") or {}
        self._frames: Frames | None = extensions.get(FRAMES_EXTENSION)  # the raw path, when the server offers it
        self._stall: asyncio.TimerHandle | None = None  # armed while the transport is paused
        if self._frames is not None:
            self._frames.listener = self
            if self._frames.paused:  # already, before this connection listened
                self.writing_paused()

    # sending
    def _queue(self, frame: bytes, key: Hashable = None, *, tag: Hashable = None) -> bool:
        """Writes a frame now if it can (True), else queues it: coalesced with a queued one of the same
        `key`, never coalesced without one."""
        if self._closing:
            return False
        frames = self._frames
        if frames is not None and not self.outbox and frames.writable:
            frames.write(frame)
            return True
        within_bounds = self.outbox.push(frame, tag) if key is None else self.outbox.coalesce(key, frame)
        if not within_bounds:
            self._slow_consumer(self.metrics.slow_consumer_queue_full, "send queue over its bound")
        self._ready.set()
        return False

    def _slow_consumer(self, closes: Counter, reason: str) -> None:
        """Marks the connection for a 4008 close, counted once by what gave it away."""
        if not self._closing:
            self._closing = f"slow consumer: {reason}"
            closes.inc()

    def _send_frame(self, frame: bytes, key: Hashable = None, *, tag: Hashable = None) -> None:
        """`_queue`, counting a frame written at once (the outbox's are counted as they are drained)."""
        if self._queue(frame, key, tag=tag):
            self._count(1, payload_size(frame))

    def send(self, body: dict[str, Any]) -> None:
        self._send_frame(text_frame(orjson.dumps(body)))

    def send_error(self, subscription_id: str | None, error: BridgeError) -> None:
        self.send(error_frame(subscription_id, error))

    def _count(self, frames: int, sent_bytes: int) -> None:
        self.metrics.websocket_frames.inc(frames)
        self.metrics.websocket_bytes.inc(sent_bytes)

    async def _send_forever(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            if self._frames is not None:
                self._flush(self._frames)
            else:
                await self._send_queued()
            if self._closing:
                await self._close(CLOSE_SLOW_CONSUMER, self._closing)
                return

    def _flush(self, frames: Frames) -> None:
        """The raw path: writes queued frames, oldest first, while the transport takes them."""
        count = sent_bytes = 0
        while self.outbox and frames.writable and not self._closing:
            frame = self.outbox.pop()
            frames.write(frame)
            count += 1
            sent_bytes += payload_size(frame)
        if count:
            self._count(count, sent_bytes)

    async def _send_queued(self) -> None:
        """The ASGI path: sends queued frames, oldest first; one send blocked for the grace closes the connection."""
        grace = self.limits.slow_consumer_grace_seconds
        count = sent_bytes = 0  # counted once per drained batch: the metrics stay off the per-frame path
        try:
            while self.outbox and not self._closing:
                payload = frame_payload(self.outbox.pop())
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as
                    # the send completes, and this sender would outlive its connection
                    async with asyncio.timeout(grace):
                        await self.websocket.send_text(payload.decode())
                except TimeoutError:
                    self._slow_consumer(self.metrics.slow_consumer_send_timeout, f"one frame not taken in {grace:g} s")
                    continue
                count += 1
                sent_bytes += len(payload)
        finally:
            self._count(count, sent_bytes)

    # FramesListener: the transport's buffer passed its high water / is down to its low water
    def writing_paused(self) -> None:
        if self._stall is None:
            grace = self.limits.slow_consumer_grace_seconds
            self._stall = asyncio.get_running_loop().call_later(grace, self._stalled, grace)

    def writing_resumed(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None
        if self._frames is not None:
            self._flush(self._frames)

    def _stalled(self, grace: float) -> None:
        self._stall = None
        self._slow_consumer(self.metrics.slow_consumer_send_timeout, f"one frame not taken in {grace:g} s")
        self._ready.set()

    async def _close(self, code: int, reason: str) -> None:
        self.outbox.clear()
        grace = self.limits.slow_consumer_grace_seconds
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError):
                async with asyncio.timeout(grace):
                    await self.websocket.close(code, reason)
        if self._frames is not None:
            self._frames.abort_after(grace)  # a client that takes neither its frames nor the close is cut
        raise WebSocketDisconnect(code)

    # StreamOutlet
    def has_stream_room(self) -> bool:
        return self.outbox.has_room

    async def stream_room(self) -> None:
        """Returns once a stream may push one more chunk frame."""
        await self._wait_for_room()

    async def _wait_for_room(self) -> None:
        """Returns at once under the outbox's high watermark, else once it is down to its low one."""
        while not self.outbox.claim_room():
            self._room.clear()
            await self._room.wait()

    def push_stream_frame(self, subscription_id: str, frame: bytes, next_index: int) -> None:
        self._send_frame(frame, tag=subscription_id)  # never coalesced; if queued, taken back if the stream is dropped
        subscription = self.subscriptions.get(subscription_id)
        if isinstance(subscription, StreamSubscription):
            subscription.pushed = next_index
            subscription.progress.set()

    def stream_ended(self, subscription_id: str) -> None:
        """The pump of `subscription_id` is done: the id is free again."""
        subscription = self.subscriptions.get(subscription_id)
        if isinstance(subscription, StreamSubscription) and self.subscriptions.remove(subscription):
            subscription.progress.set()
            if subscription.expiry:
                subscription.expiry.cancel()

    # TopicFollower
    def deliver(self, topic: str, run_id: str, frame: bytes) -> bool:
        return self._queue(frame, (topic, run_id))

    def resync(self, topic: str) -> None:
        for subscription in self.subscriptions.feeds_on(topic):
            self._spawn(self._send_snapshot(subscription))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # receiving
    async def serve(self) -> None:
        await self.websocket.accept()
        self.send(welcome_frame(self.limits))
        sender = asyncio.create_task(self._send_forever())
        receiver = asyncio.create_task(self._receive_forever())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if self._stall is not None:
                self._stall.cancel()
            for task in (sender, receiver, *self._tasks):
                task.cancel()
            await asyncio.gather(sender, receiver, *self._tasks, return_exceptions=True)
            for subscription in self.subscriptions:
                await self.drop(subscription)

    async def _receive_forever(self) -> None:
        while True:
            # Receive-side backpressure: a frame may queue a reply, and a client pipelining requests would
            # otherwise overrun the outbox's bound (4008) however fast it reads. Unread, its frames wait in
            # the server's bounded receive queue, then in TCP. One that stops reading is still closed by
            # the sender: over the bound, or a send blocked for the grace.
            await self._wait_for_room()
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            if _over(raw, self.limits.max_frame_bytes):
                # `realtime-bridge serve` has uvicorn refuse it unread; a host app's server may allow more.
                await self._close(CLOSE_MESSAGE_TOO_BIG, "frame too large")
            await handle_frame(self, raw)

    # subscriptions (dispatch.Session)
    async def add_feed(self, subscription_id: str, spec: FeedSpec, principal: Principal) -> None:
        subscription = FeedSubscription(subscription_id, spec, self._expiry(principal, subscription_id))
        self.subscriptions.add(subscription)
        try:
            await self.router.follow(spec, self)  # live first, then the snapshot: nothing falls between
            await self._send_snapshot(subscription, initial=True)
        except BaseException:  # not established: the id is free again and nothing is followed
            await self.drop(subscription)
            raise

    def add_stream(self, subscription_id: str, request: StreamRequest, principal: Principal) -> None:
        self.subscriptions.check_free(subscription_id)  # taken while the run was read
        expiry = self._expiry(principal, subscription_id)
        pump = self._spawn(pump_stream(self, subscription_id, request))
        self.subscriptions.add(StreamSubscription(subscription_id, request, expiry, pump, request.start_index))

    async def flush_run_streams(self, run_id: str) -> None:
        """Before a `send` is acknowledged, this connection's output streams of the same run push every
        chunk stored until now: a Stop button sees no token after its ack that the task wrote before
        the stop arrived. Bounded: a paused (slow) stream does not hold the ack past ACK_FLUSH_SECONDS."""
        followed = self.subscriptions.streams_of(run_id)
        try:
            async with asyncio.timeout(ACK_FLUSH_SECONDS):
                for subscription in followed:
                    stored = await self.bridge.output_streams.length(run_id, subscription.request.key)
                    while subscription.pushed < stored and self.subscriptions.is_current(subscription):
                        subscription.progress.clear()
                        await subscription.progress.wait()
        except TimeoutError:
            pass

    def _expiry(self, principal: Principal, subscription_id: str) -> asyncio.TimerHandle | None:
        if principal.expires_at is None:
            return None
        delay = max(0.0, principal.expires_at - time.time())
        return asyncio.get_running_loop().call_later(delay, self._expire, subscription_id)

    async def _send_snapshot(self, subscription: FeedSubscription, *, initial: bool = False) -> None:
        """The feed's current state; on a resync (not `initial`), a failure is reported, not raised."""
        try:
            runs = await self.bridge.feeds.snapshot(subscription.spec)
        except BridgeError as error:
            if initial:
                raise  # the subscribe fails with this error
            self.send_error(subscription.id, error)  # the subscription stays, a later resync may succeed
            return
        if not self.subscriptions.is_current(subscription):
            return  # unsubscribed meanwhile
        try:
            text = snapshot_frame(subscription, runs, self.limits.send_queue_max_bytes)
        except PayloadTooLargeError as too_large:  # this subscription fails, not the connection
            if initial:
                raise
            self.send_error(subscription.id, too_large)
            await self.drop(subscription)
            return
        self._send_frame(text_frame(text), ("snapshot", subscription.id))

    async def drop(self, subscription: AnySubscription) -> None:
        if not self.subscriptions.remove(subscription):
            return
        if subscription.expiry:
            subscription.expiry.cancel()
        if isinstance(subscription, StreamSubscription):
            await self._stop_pump(subscription)
            return
        self.outbox.discard(("snapshot", subscription.id))
        if not self.subscriptions.feeds_on(subscription.spec.topic):
            await self.router.unfollow(subscription.spec, self)

    async def _stop_pump(self, subscription: StreamSubscription) -> None:
        """Cancels a stream's pump (its reader detaches) and takes its unsent chunk frames back."""
        subscription.pump.cancel()
        if subscription.pump is not asyncio.current_task():
            await asyncio.wait({subscription.pump})
        self.outbox.discard_tagged(subscription.id)

    def _expire(self, subscription_id: str) -> None:
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            return
        self.send(
            {
                "type": "error",
                "id": subscription_id,
                "code": "token_expired",
                "message": "the subscription's token expired; subscribe again with a fresh token",
            }
        )
        self._spawn(self.drop(subscription))


def _over(text: str, limit: int) -> bool:
    """Whether `text` takes more than `limit` bytes in UTF-8; encoded only when its length cannot tell."""
    return len(text) > limit or (len(text) * 4 > limit and len(text.encode()) > limit)


async def websocket_endpoint(websocket: WebSocket) -> None:
    connection = Connection(websocket, websocket.app.state.bridge, websocket.app.state.topics)
    with connection.metrics.websocket_connections.track_inprogress(), contextlib.suppress(WebSocketDisconnect):
        await connection.serve()
