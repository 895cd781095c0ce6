"""A connection's bounded send queue, without I/O: the connection's sender task drains it.

- Frames leave oldest first. A frame pushed under the key of one still queued replaces it in
  place (`coalesce`): a slow reader gets a run's newest state, not every intermediate one.
- Over its frame or byte bound the reader is a slow consumer: `push` and `coalesce` answer False,
  and the connection closes it.
- Flow control for producers that must not be coalesced (output stream chunks, and the receive
  loop: each client frame may queue a reply): they push only while the outbox is under its high
  watermarks (`has_room`). One that finds no room calls `claim_room`; `on_room` fires once the
  outbox is down to its low watermarks (half the high ones), drained by the sender or by a
  discard, so producers resume in bursts, not frame by frame.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass

Prepared = bytes  # a complete WebSocket frame (transport.text_frame); `bytes` is a property below


@dataclass(frozen=True)
class _Serial:
    """The key of a frame that is never coalesced; `tag` groups frames `discard_tagged` removes together."""

    tag: Hashable
    number: int


class Outbox:
    def __init__(
        self,
        *,
        max_frames: int,
        max_bytes: int,
        high_frames: int,
        high_bytes: int,
        on_room: Callable[[], None],
    ) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.high_frames = high_frames
        self.high_bytes = high_bytes
        self.low_frames = high_frames // 2
        self.low_bytes = high_bytes // 2
        self._on_room = on_room
        self._frames: dict[Hashable, Prepared] = {}
        self._bytes = 0
        self._serials = itertools.count()
        self._room_wanted = False

    def __len__(self) -> int:
        return len(self._frames)

    @property
    def bytes(self) -> int:
        return self._bytes

    def push(self, frame: Prepared, tag: Hashable = None) -> bool:
        """Queues a frame that is never coalesced; False once the outbox is over its bounds."""
        return self.coalesce(_Serial(tag, next(self._serials)), frame)

    def coalesce(self, key: Hashable, frame: Prepared) -> bool:
        """Queues `frame`, replacing (in its place in the queue) a queued frame with the same key;
        False once the outbox is over its bounds."""
        previous = self._frames.get(key)
        self._bytes += len(frame) - (len(previous) if previous is not None else 0)
        self._frames[key] = frame
        return len(self._frames) <= self.max_frames and self._bytes <= self.max_bytes

    def pop(self) -> Prepared:
        """The oldest frame (the outbox must not be empty)."""
        frame = self._frames.pop(next(iter(self._frames)))
        self._bytes -= len(frame)
        self._signal_room()
        return frame

    def discard(self, key: Hashable) -> None:
        frame = self._frames.pop(key, None)
        if frame is not None:
            self._bytes -= len(frame)
            # Also here: what a discard frees may leave the sender nothing to pop, and a producer
            # waiting for room would wait for a frame that no one pushes.
            self._signal_room()

    def _signal_room(self) -> None:
        if self._room_wanted and len(self._frames) <= self.low_frames and self._bytes <= self.low_bytes:
            self._room_wanted = False
            self._on_room()

    def discard_tagged(self, tag: Hashable) -> None:
        for key in [k for k in self._frames if isinstance(k, _Serial) and k.tag == tag]:
            self.discard(key)

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0

    @property
    def has_room(self) -> bool:
        """Under the high watermarks: a producer that is never coalesced may push one more frame."""
        return len(self._frames) < self.high_frames and self._bytes < self.high_bytes

    def claim_room(self) -> bool:
        """`has_room`; when there is none, `on_room` fires once the outbox is down to its low watermarks."""
        if self.has_room:
            return True
        self._room_wanted = True
        return False
