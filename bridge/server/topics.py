"""Process-wide fan-out of run changes to WebSocket connections, by topic.

A topic is what a subscription follows (`run:<id>`, `tags:[...]`, `batch:<id>`). Each change is
encoded into one complete `update` WebSocket frame per topic, and those same bytes go to every
connection following the topic, in one synchronous pass: each writes it to its transport at once, or
(a slow reader) queues it in its outbox, which coalesces it per run.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from bridge.metrics import Metrics
from bridge.runtime.feeds import FeedSpec
from bridge.runtime.hub import Hub, Message
from bridge.server.websocket.transport import text_frame


class TopicFollower(Protocol):
    def deliver(self, topic: str, run_id: str, frame: bytes) -> bool:
        """True: written now (the topic counts it); False: queued, or dropped by a closing connection."""

    def resync(self, topic: str) -> None: ...


class _Topic:
    def __init__(self, spec: FeedSpec, metrics: Metrics) -> None:
        self._frames = metrics.websocket_frames
        self._bytes = metrics.websocket_bytes
        # Time windows differ per subscription; the topic carries every run the feed could hold.
        self.spec = FeedSpec(kind=spec.kind, run_id=spec.run_id, tags=spec.tags, batch_id=spec.batch_id)
        self.followers: set[TopicFollower] = set()

    def on_message(self, channel: str, message: Message | None) -> None:
        if message is None:
            for follower in tuple(self.followers):
                follower.resync(self.spec.topic)
            return
        run = message.run
        if not self.spec.matches(run):
            return
        payload = orjson.dumps({"type": "update", "topic": self.spec.topic, "run": run.to_public()})
        frame = text_frame(payload)
        topic, run_id = self.spec.topic, run.id
        written = 0
        for follower in tuple(self.followers):
            written += follower.deliver(topic, run_id, frame)
        if written:  # counted once per message: the metrics stay off the per-delivery path
            self._frames.inc(written)
            self._bytes.inc(written * len(payload))


class TopicRouter:
    def __init__(self, hub: Hub, metrics: Metrics) -> None:
        self._hub = hub
        self._metrics = metrics
        self._topics: dict[str, _Topic] = {}

    async def follow(self, spec: FeedSpec, follower: TopicFollower) -> None:
        """Returns once changes published from now on reach `follower`."""
        topic = self._topics.get(spec.topic)
        if topic is None:
            topic = self._topics[spec.topic] = _Topic(spec, self._metrics)
        topic.followers.add(follower)
        try:
            await self._hub.attach(spec.channel, topic.on_message)
        except BaseException:
            await self.unfollow(spec, follower)
            raise

    async def unfollow(self, spec: FeedSpec, follower: TopicFollower) -> None:
        topic = self._topics.get(spec.topic)
        if topic is None or follower not in topic.followers:
            return
        topic.followers.discard(follower)
        if not topic.followers:
            del self._topics[spec.topic]
            await self._hub.detach(spec.channel, topic.on_message)

    @property
    def topic_count(self) -> int:
        return len(self._topics)
