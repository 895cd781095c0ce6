"""A connection's subscriptions: run feeds (`feed: "run" | "tags" | "batch"`) and output streams
(`feed: "stream"`), each with its own type, and what authorizes them.

A feed subscription follows its topic through the `TopicRouter`; its updates coalesce in the
outbox per (topic, run). A stream subscription is a pump task: a `StreamReader` (live listener
attached before history is read, chunks deduplicated by index) whose chunks become `chunk`
frames, then one `end` frame. A chunk frame is the chunk's stored JSON text spliced into a
prefix, never decoded and re-encoded; the first one also names the stream's epoch, which the client
sends back when it resumes, so a stream whose storage was lost meanwhile ends with `stream_reset`.

Live chunks skip the pump: while its reader waits caught up, a chunk notification becomes its frame
synchronously in the hub's dispatch (`StreamReader.live_sink`), pushed if the connection has room. The pump
runs for the first frame, catch-up from storage, backpressure and the end.

Stream flow control: the pump pushes a chunk only while the outbox has room (see outbox.py), and
otherwise waits for the sender to drain it. While it waits, its reader's bounded live buffer may
overflow; the reader then continues from storage at its next index. So a slow reader costs
bounded memory and loses nothing, and chunk frames are never coalesced.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from prometheus_client import Gauge

from bridge.errors import (
    BridgeError,
    PayloadTooLargeError,
    StreamFailedError,
    StreamResetError,
    TooManyError,
    ValidationError,
)
from bridge.models import Run
from bridge.runtime.access import Principal, require_run_read
from bridge.runtime.core import Bridge
from bridge.runtime.feeds import DEFAULT_TAG_WINDOW, FeedSpec, authorized_tag_feed
from bridge.runtime.output_streams import MAX_IDLE_SECONDS, check_epoch, check_start_index, check_stream_key
from bridge.server.websocket.protocol import Frame, internal_error_frame, required_string
from bridge.server.websocket.transport import text_frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamRequest:
    run_id: str
    key: str
    start_index: int
    idle_timeout: float | None
    epoch: str | None  # of the chunks the client holds before `start_index`


@dataclass
class FeedSubscription:
    id: str
    spec: FeedSpec
    expiry: asyncio.TimerHandle | None


@dataclass
class StreamSubscription:
    id: str
    request: StreamRequest
    expiry: asyncio.TimerHandle | None
    pump: asyncio.Task[None]
    pushed: int  # the next chunk index the pump will push
    progress: asyncio.Event = field(default_factory=asyncio.Event)  # set whenever `pushed` moves or the pump ends


AnySubscription = FeedSubscription | StreamSubscription


class Subscriptions:
    """A connection's subscriptions by id, at most `limit` of them, counted in `gauges` by feed kind."""

    def __init__(self, limit: int, gauges: Mapping[str, Gauge]) -> None:
        self._limit = limit
        self._gauges = gauges
        self._by_id: dict[str, AnySubscription] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[AnySubscription]:
        return iter(list(self._by_id.values()))  # a copy: callers drop subscriptions while iterating

    def check_free(self, subscription_id: str) -> None:
        if subscription_id in self._by_id:
            raise ValidationError(f"subscription id {subscription_id!r} is already in use on this connection")

    def check_room(self) -> None:
        if len(self._by_id) >= self._limit:
            raise TooManyError(f"at most {self._limit} subscriptions per connection")

    def add(self, subscription: AnySubscription) -> None:
        self._by_id[subscription.id] = subscription
        self._gauges[_feed_of(subscription)].inc()

    def get(self, subscription_id: str) -> AnySubscription | None:
        return self._by_id.get(subscription_id)

    def is_current(self, subscription: AnySubscription) -> bool:
        """False once it was dropped (or its id reused)."""
        return self._by_id.get(subscription.id) is subscription

    def remove(self, subscription: AnySubscription) -> bool:
        """True if it was current and is removed now."""
        if not self.is_current(subscription):
            return False
        del self._by_id[subscription.id]
        self._gauges[_feed_of(subscription)].dec()
        return True

    def feeds_on(self, topic: str) -> list[FeedSubscription]:
        return [s for s in self._by_id.values() if isinstance(s, FeedSubscription) and s.spec.topic == topic]

    def streams_of(self, run_id: str) -> list[StreamSubscription]:
        return [s for s in self._by_id.values() if isinstance(s, StreamSubscription) and s.request.run_id == run_id]


def _feed_of(subscription: AnySubscription) -> str:
    return subscription.spec.kind if isinstance(subscription, FeedSubscription) else "stream"


async def authorize_feed(bridge: Bridge, frame: Frame, principal: Principal) -> FeedSpec:
    """Validates a run, tags or batch subscribe frame and checks the token may read that feed."""
    feed = frame.get("feed")
    if feed == "run":
        run_id = required_string(frame, "runId", 128)
        run = await bridge.engine.retrieve(run_id)
        require_run_read(principal, run)
        return FeedSpec.for_run(run_id)
    if feed == "tags":
        tags = frame.get("tags")
        if isinstance(tags, str):
            tags = [tags]
        tags = bridge.engine.check_tags(tags)
        if not tags:
            raise ValidationError("a tags feed needs at least one tag")
        return authorized_tag_feed(principal, tags, frame.get("createdAt", DEFAULT_TAG_WINDOW), bridge.settings)
    if feed == "batch":
        batch_id = required_string(frame, "batchId", 128)
        principal.require_any("read", [("batch", batch_id), ("runs", None)])
        return FeedSpec.for_batch(batch_id)
    raise ValidationError('feed must be "run", "tags", "batch" or "stream"')


def snapshot_frame(subscription: FeedSubscription, runs: list[Run], max_bytes: int) -> bytes:
    """The `snapshot` frame; PayloadTooLargeError over `max_bytes`, which the outbox could never take: queued,
    it would close the whole connection as a slow consumer, on every reconnection."""
    frame = {
        "type": "snapshot",
        "id": subscription.id,
        "topic": subscription.spec.topic,
        "runs": [run.to_public() for run in runs],
    }
    text = orjson.dumps(frame)
    if len(text) > max_bytes:
        raise PayloadTooLargeError(
            f"this feed's current state is {len(text)} bytes, over the {max_bytes} bytes a snapshot may take:"
            " narrow it (more tags, a shorter createdAt)"
        )
    return text


async def authorize_stream(bridge: Bridge, frame: Frame, principal: Principal) -> StreamRequest:
    """Validates a `feed: "stream"` subscribe frame and checks the token may read the run."""
    run_id = required_string(frame, "runId", 128)
    key = frame.get("key")
    if not isinstance(key, str):
        raise ValidationError("key must be a string")
    check_stream_key(key)
    start_index = check_start_index(frame.get("startIndex", 0))
    epoch = check_epoch(frame.get("epoch"))
    idle = frame.get("timeoutInSeconds")
    if idle is not None and (
        not isinstance(idle, (int, float)) or isinstance(idle, bool) or not 1 <= idle <= MAX_IDLE_SECONDS
    ):
        raise ValidationError(f"timeoutInSeconds must be a number from 1 to {MAX_IDLE_SECONDS}")
    run = await bridge.engine.retrieve(run_id)
    require_run_read(principal, run)
    return StreamRequest(run_id, key, start_index, None if idle is None else float(idle), epoch)


class StreamOutlet(Protocol):
    """What a pump needs from its connection."""

    bridge: Bridge

    def has_stream_room(self) -> bool: ...

    def stream_room(self) -> Awaitable[None]: ...

    def push_stream_frame(self, subscription_id: str, frame: bytes, next_index: int) -> None: ...

    def stream_ended(self, subscription_id: str) -> None: ...

    def send(self, body: dict[str, Any]) -> None: ...

    def send_error(self, subscription_id: str | None, error: BridgeError) -> None: ...


async def pump_stream(connection: StreamOutlet, subscription_id: str, request: StreamRequest) -> None:
    """Sends the stream as `chunk` frames, then `end`; cancelled by unsubscribe, token expiry or disconnect."""
    prefix = b'{"type":"chunk","id":' + orjson.dumps(subscription_id) + b","
    reader = connection.bridge.output_streams.reader(
        request.run_id, request.key, request.start_index, request.idle_timeout, request.epoch
    )
    pump = asyncio.current_task()
    assert pump is not None

    def live(index: int, data: bytes) -> bool:
        """A live chunk, while the reader waits caught up: its frame pushed from the hub's dispatch, if there is
        room (not once this pump is being cancelled: its subscription is being dropped)."""
        if pump.cancelling() or not connection.has_stream_room():
            return False
        frame = b'%s"index":%d,"data":%s}' % (prefix, index, data)
        connection.push_stream_frame(subscription_id, text_frame(frame), index + 1)
        return True

    try:
        async with reader:
            first = True
            async for chunk in reader.chunks():
                if not connection.has_stream_room():
                    await connection.stream_room()
                # The first chunk frame names the epoch the chunks are read under (set by then, unless the
                # stream was stored before epochs existed).
                epoch = b'"epoch":' + orjson.dumps(reader.epoch) + b"," if first and reader.epoch else b""
                first = False
                frame = b'%s%s"index":%d,"data":%s}' % (prefix, epoch, chunk.index, chunk.data)
                connection.push_stream_frame(subscription_id, text_frame(frame), chunk.index + 1)
                reader.live_sink = live  # from the first frame (it names the epoch) on
    except (StreamFailedError, StreamResetError) as error:  # the stream failed, or its storage was lost
        connection.stream_ended(subscription_id)
        connection.send(
            {
                "type": "end",
                "id": subscription_id,
                "nextIndex": reader.next_index,
                "reason": "error",
                "code": error.code,
                "message": error.message,
            }
        )
        return
    except BridgeError as error:  # the backend failed: the subscription ends; resubscribe from the next index
        connection.stream_ended(subscription_id)
        connection.send_error(subscription_id, error)
        return
    except Exception:
        log.exception("stream subscription %r failed", subscription_id)
        connection.stream_ended(subscription_id)
        connection.send(internal_error_frame(subscription_id))
        return
    connection.stream_ended(subscription_id)
    reason = "timeout" if reader.timed_out else "finished"
    connection.send({"type": "end", "id": subscription_id, "nextIndex": reader.next_index, "reason": reason})
