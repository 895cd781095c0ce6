"""One broker subscription per channel per process, fanned out to local listeners.

Every consumer in the process (WebSocket topics, Electric feed sessions, SDK subscriptions,
the worker's cancel listener) attaches here, so a run change is received and decoded once per
process however many consumers want it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from bridge.backends.base import Notifier
from bridge.backends.channels import ChunksMessage, decode_chunks_message
from bridge.metrics import Metrics
from bridge.models import Run

log = logging.getLogger(__name__)


class Message:
    """One published message, decoded at most once per process, by the first listener that asks."""

    __slots__ = ("_chunks", "_run", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self._run: Run | None = None
        self._chunks: ChunksMessage | None = None

    @property
    def run(self) -> Run:
        """A run channel's message: the stored run."""
        if self._run is None:
            self._run = Run.from_storage(self.raw)
        return self._run

    @property
    def chunks(self) -> ChunksMessage:
        """A stream channel's message: the first chunk's index, the stream's epoch and the chunks' JSON."""
        if self._chunks is None:
            self._chunks = decode_chunks_message(self.raw)
        return self._chunks


# A listener gets (channel, message); `None` means "messages may have been lost: re-read state".
Listener = Callable[[str, Message | None], None]


class Hub:
    def __init__(self, notifier: Notifier, metrics: Metrics) -> None:
        self._notifier = notifier
        self._listeners: dict[str, set[Listener]] = {}
        self._lock = asyncio.Lock()
        self._resyncs = metrics.hub_resyncs
        metrics.hub_channels.set_function(lambda: self.channel_count)
        notifier.set_listener(self._dispatch, self._resync)

    async def attach(self, channel: str, listener: Listener) -> None:
        """Returns once the broker confirms the subscription: later changes reach `listener`."""
        async with self._lock:
            listeners = self._listeners.get(channel)
            if listeners is None:
                self._listeners[channel] = {listener}
                try:
                    await self._notifier.listen([channel])
                except BaseException:
                    del self._listeners[channel]
                    raise
            else:
                listeners.add(listener)

    async def detach(self, channel: str, listener: Listener) -> None:
        async with self._lock:
            listeners = self._listeners.get(channel)
            if listeners is None or listener not in listeners:
                return
            listeners.discard(listener)
            if not listeners:
                del self._listeners[channel]
                await self._notifier.unlisten([channel])

    @property
    def channel_count(self) -> int:
        return len(self._listeners)

    def _dispatch(self, channel: str, data: bytes) -> None:
        message = Message(data)
        for listener in tuple(self._listeners.get(channel, ())):
            try:
                listener(channel, message)
            except Exception:  # one faulty consumer must not starve the others
                log.exception("hub listener failed on %s", channel)

    def _resync(self) -> None:
        for channel, listeners in tuple(self._listeners.items()):
            self._resyncs.inc(len(listeners))
            for listener in tuple(listeners):
                try:
                    listener(channel, None)
                except Exception:
                    log.exception("hub listener failed to resync on %s", channel)
