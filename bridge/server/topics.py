"""Process-wide fan-out of run changes to WebSocket connections, by topic.

A topic is what a subscription follows (`run:<id>`, `tags:[...]`, `batch:<id>`). Each change is
encoded into one `update` frame per topic, and that same string goes to every connection
following the topic; a connection's own outbox then coalesces it per run.
"""

from __future__ import annotations

from typing import Protocol

import orjson

from bridge.runtime.feeds import FeedSpec
from bridge.runtime.hub import Hub, Message


class TopicFollower(Protocol):
    def deliver(self, topic: str, run_id: str, frame: str) -> None: ...

    def resync(self, topic: str) -> None: ...


class _Topic:
    def __init__(self, spec: FeedSpec) -> None:
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
        frame = orjson.dumps({"type": "update", "topic": self.spec.topic, "run": run.to_public()}).decode()
        for follower in tuple(self.followers):
            follower.deliver(self.spec.topic, run.id, frame)


class TopicRouter:
    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        self._topics: dict[str, _Topic] = {}

    async def follow(self, spec: FeedSpec, follower: TopicFollower) -> None:
        """Returns once changes published from now on reach `follower`."""
        topic = self._topics.get(spec.topic)
        if topic is None:
            topic = self._topics[spec.topic] = _Topic(spec)
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
