"""The bridge's WebSocket protocol (docs/protocol.md): many subscriptions over one connection.

Each connection has one bounded outbox drained by one sender task. Run updates coalesce in it
per (topic, run): a slow reader gets the latest state, not every intermediate one. A reader that
stops reading altogether — the outbox over its bounds, or one send blocked for the grace
period — is closed with code 4008 and its memory freed. Output stream subscriptions
(stream_subscriptions.py) never coalesce: they push only while the outbox has room.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from bridge.durations import parse_duration_seconds
from bridge.errors import (
    BridgeError,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    TooManyError,
    UnauthorizedError,
    ValidationError,
)
from bridge.models import now_ms
from bridge.runtime.access import INVALID_TOKEN_MESSAGE, Principal, authenticate, require_run_read
from bridge.runtime.core import Bridge
from bridge.runtime.feeds import FeedSpec
from bridge.runtime.input_streams import send_input
from bridge.server.stream_subscriptions import StreamRequest, authorize_stream, pump_stream
from bridge.server.topics import TopicRouter

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
CLOSE_SLOW_CONSUMER = 4008
MAX_SUBSCRIPTION_ID_LENGTH = 64
ACK_FLUSH_SECONDS = 2.0  # at most this long an input ack waits for the connection's streams of that run
MAX_TOKEN_LENGTH = 16_384
DEFAULT_TAG_WINDOW = "1d"
STREAM_QUEUE_FRAMES = 128  # a stream subscription pushes a chunk only while the outbox holds fewer frames


@dataclass
class Subscription:
    id: str
    spec: FeedSpec | None  # None for an output stream, which its pump serves
    expiry: asyncio.TimerHandle | None
    pump: asyncio.Task[None] | None = None
    stream: StreamRequest | None = None
    pushed: int = 0  # an output stream: the next chunk index its pump will push
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever `pushed` moves or the pump ends


class Connection:
    def __init__(self, websocket: WebSocket, bridge: Bridge, router: TopicRouter) -> None:
        self.websocket = websocket
        self.bridge = bridge
        self.router = router
        self.limits = bridge.settings.limits
        self.subscriptions: dict[str, Subscription] = {}
        self._outbox: dict[object, str] = {}
        self._outbox_bytes = 0
        self._ready = asyncio.Event()
        self._frame_keys = itertools.count()
        self._closing: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # Stream flow control: pumps wait on `_room`, which the sender sets once the outbox is down to half.
        self._stream_frames = max(1, min(STREAM_QUEUE_FRAMES, self.limits.send_queue_max_frames // 2))
        self._stream_bytes = max(1, self.limits.send_queue_max_bytes // 2)
        self._room = asyncio.Event()

    # outbox
    def _push(self, key: object, frame: str) -> None:
        if self._closing:
            return
        previous = self._outbox.get(key)
        self._outbox_bytes += len(frame) - (len(previous) if previous is not None else 0)
        self._outbox[key] = frame
        if (
            len(self._outbox) > self.limits.send_queue_max_frames
            or self._outbox_bytes > self.limits.send_queue_max_bytes
        ):
            self._closing = "slow consumer: send queue over its bound"
        self._ready.set()

    def send(self, body: dict[str, Any]) -> None:
        self._push(next(self._frame_keys), orjson.dumps(body).decode())

    def send_error(self, subscription_id: str | None, error: BridgeError) -> None:
        self.send({"type": "error", "id": subscription_id, "code": error.code, "message": error.message})

    async def _send_forever(self) -> None:
        grace = self.limits.slow_consumer_grace_seconds
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._outbox and not self._closing:
                key = next(iter(self._outbox))
                frame = self._outbox.pop(key)
                self._outbox_bytes -= len(frame)
                if (
                    len(self._outbox) <= self._stream_frames // 2
                    and self._outbox_bytes <= self._stream_bytes // 2
                    and not self._room.is_set()
                ):
                    self._room.set()
                try:
                    # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel that arrives as the
                    # send completes, and this sender would outlive its connection
                    async with asyncio.timeout(grace):
                        await self.websocket.send_text(frame)
                except TimeoutError:
                    self._closing = f"slow consumer: one frame not taken in {grace:g} s"
            if self._closing:
                await self._close(CLOSE_SLOW_CONSUMER, self._closing)
                return

    async def _close(self, code: int, reason: str) -> None:
        self._outbox.clear()
        self._outbox_bytes = 0
        if self.websocket.application_state is WebSocketState.CONNECTED:
            with contextlib.suppress(TimeoutError, RuntimeError, OSError):
                async with asyncio.timeout(self.limits.slow_consumer_grace_seconds):
                    await self.websocket.close(code, reason)
        raise WebSocketDisconnect(code)

    # StreamOutlet
    def has_stream_room(self) -> bool:
        return len(self._outbox) < self._stream_frames and self._outbox_bytes < self._stream_bytes

    async def stream_room(self) -> None:
        """Returns once a stream may push one more chunk frame."""
        while not self.has_stream_room():
            self._room.clear()
            await self._room.wait()

    def push_stream_frame(self, subscription_id: str, frame: str, next_index: int) -> None:
        self._push(("stream", subscription_id, next(self._frame_keys)), frame)  # unique: never coalesced
        subscription = self.subscriptions.get(subscription_id)
        if subscription is not None:
            subscription.pushed = next_index
            subscription.progress.set()

    def stream_ended(self, subscription_id: str) -> None:
        """The pump of `subscription_id` is done: the id is free again."""
        subscription = self.subscriptions.pop(subscription_id, None)
        if subscription is not None:
            subscription.progress.set()
            if subscription.expiry:
                subscription.expiry.cancel()

    # TopicFollower
    def deliver(self, topic: str, run_id: str, frame: str) -> None:
        self._push((topic, run_id), frame)

    def resync(self, topic: str) -> None:
        for subscription in list(self.subscriptions.values()):
            if subscription.spec is not None and subscription.spec.topic == topic:
                self._spawn(self._send_snapshot(subscription))

    def _spawn(self, coroutine: Any) -> asyncio.Task[None]:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # protocol
    async def serve(self) -> None:
        await self.websocket.accept()
        self.send(
            {
                "type": "welcome",
                "protocol": PROTOCOL_VERSION,
                "limits": {
                    "maxSubscriptions": self.limits.max_subscriptions_per_connection,
                    "maxFrameBytes": self.limits.max_frame_bytes,
                    "maxSubscribeFrameBytes": self.limits.max_control_frame_bytes,
                },
            }
        )
        sender = asyncio.create_task(self._send_forever())
        receiver = asyncio.create_task(self._receive_forever())
        try:
            await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, receiver, *self._tasks):
                task.cancel()
            await asyncio.gather(sender, receiver, *self._tasks, return_exceptions=True)
            for subscription in list(self.subscriptions.values()):
                await self._drop(subscription)

    async def _receive_forever(self) -> None:
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw = message.get("text")
            if raw is None:
                raw = (message.get("bytes") or b"").decode("utf-8", errors="replace")
            await self._handle(raw)

    async def _handle(self, raw: str) -> None:
        try:
            frame = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self.send_error(None, ValidationError("the frame is not valid JSON"))
            return
        if not isinstance(frame, dict):
            self.send_error(None, ValidationError('a frame is a JSON object with a "type"'))
            return
        kind = frame.get("type")
        subscription_id = frame.get("id") if isinstance(frame.get("id"), str) else None
        try:
            if kind == "ping":
                self.send({"type": "pong", "id": subscription_id})
            elif kind == "send":
                await self._send_input(frame)
            elif kind == "complete":
                await self._complete_token(frame)
            elif kind in ("subscribe", "unsubscribe"):
                if len(raw) > self.limits.max_control_frame_bytes:  # only `send` frames carry big values
                    raise PayloadTooLargeError(f"a {kind} frame is at most {self.limits.max_control_frame_bytes} bytes")
                await (self._subscribe(frame) if kind == "subscribe" else self._unsubscribe(frame))
            else:
                raise ValidationError(f"unknown frame type {str(kind)[:40]!r}")
        except BridgeError as error:
            self.send_error(subscription_id, error)
        except Exception:  # our bug: report it on this subscription, keep the connection
            log.exception("websocket frame %r failed", kind)
            self.send({"type": "error", "id": subscription_id, "code": "internal", "message": "internal error"})

    async def _subscribe(self, frame: dict[str, Any]) -> None:
        subscription_id = _required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
        if subscription_id in self.subscriptions:
            raise ValidationError(f"subscription id {subscription_id!r} is already in use on this connection")
        if len(self.subscriptions) >= self.limits.max_subscriptions_per_connection:
            raise TooManyError(f"at most {self.limits.max_subscriptions_per_connection} subscriptions per connection")
        principal = self._principal(frame)
        if frame.get("feed") == "stream":
            request = await authorize_stream(self.bridge, frame, principal)
            if subscription_id in self.subscriptions:  # taken while the run was read
                raise ValidationError(f"subscription id {subscription_id!r} is already in use on this connection")
            subscription = Subscription(subscription_id, None, self._expiry(principal, subscription_id))
            subscription.stream, subscription.pushed = request, request.start_index
            self.subscriptions[subscription_id] = subscription
            subscription.pump = self._spawn(pump_stream(self, subscription_id, request))
            return
        spec = await self._authorized_spec(frame, principal)
        subscription = Subscription(subscription_id, spec, self._expiry(principal, subscription_id))
        self.subscriptions[subscription_id] = subscription
        try:
            await self.router.follow(spec, self)  # live first, then the snapshot: nothing falls between
            await self._send_snapshot(subscription, initial=True)
        except BaseException:  # not established: the id is free again and nothing is followed
            await self._drop(subscription)
            raise

    async def _send_input(self, frame: dict[str, Any]) -> None:
        """A value for a run's input stream: acknowledged with its index once stored."""
        request_id = _required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
        run_id = _required_string(frame, "runId", 128)
        stream_id = _required_string(frame, "streamId", 128)
        if "data" not in frame:
            raise ValidationError("a send frame needs a data field")
        principal = self._principal(frame)
        principal.require_any("write", [("inputStreams", run_id)])
        index = await send_input(self.bridge.engine, run_id, stream_id, frame["data"])
        await self._flush_run_streams(run_id)
        self.send({"type": "ack", "id": request_id, "index": index})

    async def _complete_token(self, frame: dict[str, Any]) -> None:
        """Completes a wait token: acknowledged once stored (also when it was done already)."""
        request_id = _required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
        token_id = _required_string(frame, "tokenId", 128)
        if "data" not in frame:
            raise ValidationError('a complete frame needs a data field ("data": null completes without a value)')
        self._principal(frame).require_any("write", [("waitpoints", token_id)])
        await self.bridge.waitpoints.complete(token_id, frame["data"])
        self.send({"type": "ack", "id": request_id})

    async def _flush_run_streams(self, run_id: str) -> None:
        """Before a `send` is acknowledged, this connection's output streams of the same run push every
        chunk stored until now: a Stop button sees no token after its ack that the task wrote before
        the stop arrived. Bounded: a paused (slow) stream does not hold the ack past ACK_FLUSH_SECONDS."""
        followed = [(s, s.stream) for s in self.subscriptions.values() if s.stream and s.stream.run_id == run_id]
        try:
            async with asyncio.timeout(ACK_FLUSH_SECONDS):
                for subscription, stream in followed:
                    stored = await self.bridge.broker.stream_length(run_id, stream.key)
                    while subscription.pushed < stored and self.subscriptions.get(subscription.id) is subscription:
                        subscription.progress.clear()
                        await subscription.progress.wait()
        except TimeoutError:
            pass

    def _principal(self, frame: dict[str, Any]) -> Principal:
        token = frame.get("token")
        if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH):
            raise UnauthorizedError(INVALID_TOKEN_MESSAGE)  # malformed: like a bad token, not a bad frame
        return authenticate(self.bridge.settings.secret_key, token)

    def _expiry(self, principal: Principal, subscription_id: str) -> asyncio.TimerHandle | None:
        if principal.expires_at is None:
            return None
        delay = max(0.0, principal.expires_at - time.time())
        return asyncio.get_running_loop().call_later(delay, self._expire, subscription_id)

    async def _authorized_spec(self, frame: dict[str, Any], principal: Principal) -> FeedSpec:
        feed = frame.get("feed")
        if feed == "run":
            run_id = _required_string(frame, "runId", 128)
            run = await self.bridge.engine.retrieve(run_id)
            require_run_read(principal, run)
            return FeedSpec.for_run(run_id)
        if feed == "tags":
            tags = frame.get("tags")
            if isinstance(tags, str):
                tags = [tags]
            tags = self.bridge.engine.check_tags(tags)
            if not tags:
                raise ValidationError("a tags feed needs at least one tag")
            if not principal.allows_any("read", [("runs", None), ("tags", None), *(("tags", t) for t in tags)]):
                raise ForbiddenError("Unauthorized: reading these tags needs read:tags or read:tags:<tag>")
            window = frame.get("createdAt", DEFAULT_TAG_WINDOW)
            if not isinstance(window, (str, int, float)):
                raise ValidationError('createdAt is a duration like "1h" or seconds')
            seconds = min(parse_duration_seconds(window), self.bridge.settings.retention_seconds)
            return FeedSpec.for_tags(tags, now_ms() - int(seconds * 1000), self.limits.max_tag_feed_runs)
        if feed == "batch":
            batch_id = _required_string(frame, "batchId", 128)
            principal.require_any("read", [("batch", batch_id), ("runs", None)])
            return FeedSpec.for_batch(batch_id)
        raise ValidationError('feed must be "run", "tags", "batch" or "stream"')

    async def _send_snapshot(self, subscription: Subscription, *, initial: bool = False) -> None:
        assert subscription.spec is not None
        try:
            runs = await subscription.spec.snapshot(self.bridge.broker)
        except BridgeError as error:
            if initial:
                raise  # the subscribe fails with this error
            self.send_error(subscription.id, error)  # a resync: the subscription stays, a later one may succeed
            return
        if self.subscriptions.get(subscription.id) is not subscription:
            return  # unsubscribed meanwhile
        frame = {
            "type": "snapshot",
            "id": subscription.id,
            "topic": subscription.spec.topic,
            "runs": [run.to_public() for run in runs],
        }
        text = orjson.dumps(frame).decode()
        limit = self.limits.send_queue_max_bytes
        if len(text) > limit:
            # Queued, it would close the whole connection as a slow consumer, on every reconnection:
            # this subscription fails instead, with an error that says what to do.
            too_large = PayloadTooLargeError(
                f"this feed's current state is {len(text)} bytes, over the {limit} bytes a snapshot may take:"
                " narrow it (more tags, a shorter createdAt)"
            )
            if initial:
                raise too_large
            self.send_error(subscription.id, too_large)
            await self._drop(subscription)
            return
        self._push(("snapshot", subscription.id), text)

    async def _unsubscribe(self, frame: dict[str, Any]) -> None:
        subscription_id = _required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
        subscription = self.subscriptions.get(subscription_id)
        if subscription is None:
            raise NotFoundError(f"no subscription {subscription_id!r} on this connection")
        await self._drop(subscription)
        self.send({"type": "unsubscribed", "id": subscription_id})

    async def _drop(self, subscription: Subscription) -> None:
        if self.subscriptions.get(subscription.id) is not subscription:
            return
        del self.subscriptions[subscription.id]
        if subscription.expiry:
            subscription.expiry.cancel()
        if subscription.pump is not None:
            await self._stop_pump(subscription.id, subscription.pump)
            return
        self._unqueue(("snapshot", subscription.id))
        spec = subscription.spec
        assert spec is not None
        if not any(s.spec is not None and s.spec.topic == spec.topic for s in self.subscriptions.values()):
            await self.router.unfollow(spec, self)

    async def _stop_pump(self, subscription_id: str, pump: asyncio.Task[None]) -> None:
        """Cancels a stream's pump (its reader detaches) and takes its unsent chunk frames back."""
        pump.cancel()
        if pump is not asyncio.current_task():
            await asyncio.wait({pump})
        for key in [k for k in self._outbox if isinstance(k, tuple) and k[:2] == ("stream", subscription_id)]:
            self._unqueue(key)

    def _unqueue(self, key: object) -> None:
        frame = self._outbox.pop(key, None)
        if frame is not None:
            self._outbox_bytes -= len(frame)

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
        self._spawn(self._drop(subscription))


def _required_string(frame: dict[str, Any], field: str, max_length: int) -> str:
    value = frame.get(field)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise ValidationError(f"{field} must be a non-empty string of at most {max_length} characters")
    return value


async def websocket_endpoint(websocket: WebSocket) -> None:
    connection = Connection(websocket, websocket.app.state.bridge, websocket.app.state.topics)
    with contextlib.suppress(WebSocketDisconnect):
        await connection.serve()
