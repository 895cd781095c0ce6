"""The WebSocket outbox on its own: coalescing, bounds, the slow-consumer decision, the stream watermarks."""

from __future__ import annotations

from bridge.server.websocket.outbox import Outbox


class Rooms:
    """Counts the outbox's room signals."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def outbox(
    max_frames: int = 100, max_bytes: int = 10_000, high_frames: int = 8, high_bytes: int = 1_000
) -> tuple[Outbox, Rooms]:
    rooms = Rooms()
    box = Outbox(
        max_frames=max_frames, max_bytes=max_bytes, high_frames=high_frames, high_bytes=high_bytes, on_room=rooms
    )
    return box, rooms


def drain(box: Outbox) -> list[str]:
    return [box.pop() for _ in range(len(box))]


def test_frames_leave_oldest_first() -> None:
    box, _ = outbox()
    for frame in ("a", "b", "c"):
        assert box.push(frame)
    assert drain(box) == ["a", "b", "c"]
    assert len(box) == 0 and box.bytes == 0


def test_a_coalesced_frame_replaces_the_queued_one_in_its_place() -> None:
    box, _ = outbox()
    box.coalesce(("run:1", "run_1"), "v1")
    box.push("other")
    box.coalesce(("run:1", "run_1"), "v2-longer")
    box.coalesce(("run:1", "run_2"), "w1")
    assert len(box) == 3
    assert box.bytes == len("v2-longer") + len("other") + len("w1")
    assert drain(box) == ["v2-longer", "other", "w1"]


def test_plain_frames_are_never_coalesced() -> None:
    box, _ = outbox()
    box.push("same", tag="s")
    box.push("same", tag="s")
    box.push("same")
    assert drain(box) == ["same", "same", "same"]


def test_discard_takes_back_a_key_or_every_frame_of_a_tag() -> None:
    box, _ = outbox()
    box.push("chunk 0", tag="stream-1")
    box.coalesce(("snapshot", "feed-1"), "snapshot")
    box.push("chunk 0 of another", tag="stream-2")
    box.push("chunk 1", tag="stream-1")
    box.discard_tagged("stream-1")
    box.discard(("snapshot", "feed-1"))
    box.discard(("snapshot", "never queued"))
    assert box.bytes == len("chunk 0 of another")
    assert drain(box) == ["chunk 0 of another"]


def test_over_its_frame_bound_the_reader_is_a_slow_consumer() -> None:
    box, _ = outbox(max_frames=3)
    assert all(box.push(str(n)) for n in range(3))
    assert box.coalesce("k", "x") is False
    box.pop()
    assert box.coalesce("k", "y")  # back within the bound: the key is coalesced, not added


def test_over_its_byte_bound_the_reader_is_a_slow_consumer() -> None:
    box, _ = outbox(max_bytes=10)
    assert box.push("12345")
    assert box.coalesce("k", "12345")
    assert box.coalesce("k", "123456") is False  # a bigger replacement counts its extra bytes
    box.clear()
    assert len(box) == 0 and box.bytes == 0
    assert box.push("1234567890")


def test_streams_have_room_only_under_the_high_watermarks() -> None:
    box, _ = outbox(high_frames=4, high_bytes=100)
    for n in range(3):
        box.push(f"frame {n}")
    assert box.has_room
    box.push("frame 3")
    assert not box.has_room  # 4 frames
    box, _ = outbox(high_frames=4, high_bytes=100)
    box.push("x" * 100)
    assert not box.has_room  # 100 bytes


def test_room_is_signalled_once_the_outbox_drains_to_its_low_watermarks() -> None:
    box, rooms = outbox(high_frames=8, high_bytes=1_000)
    for n in range(8):
        box.push(f"f{n}")
    assert box.claim_room() is False
    for _ in range(3):
        box.pop()
    assert rooms.count == 0  # 5 frames left: still over the low watermark (4)
    box.pop()
    assert rooms.count == 1  # 4 frames: at the low watermark
    box.pop()
    assert rooms.count == 1  # once per claim


def test_the_low_byte_watermark_holds_the_signal_too() -> None:
    box, rooms = outbox(high_frames=8, high_bytes=100)
    box.push("a" * 60)
    box.push("b" * 45)
    assert box.claim_room() is False  # 105 bytes
    box.pop()
    assert rooms.count == 1  # 45 bytes <= 50
    box, rooms = outbox(high_frames=8, high_bytes=100)
    box.push("a" * 10)
    box.push("b" * 95)
    assert box.claim_room() is False
    box.pop()
    assert rooms.count == 0  # 95 bytes left: over the low byte watermark


def test_room_is_not_signalled_without_a_claim_and_a_claim_with_room_succeeds() -> None:
    box, rooms = outbox(high_frames=4, high_bytes=1_000)
    assert box.claim_room()
    for n in range(6):
        box.push(str(n))
    drain(box)
    assert rooms.count == 0


def test_room_is_signalled_when_a_discard_drains_the_outbox_to_its_low_watermarks() -> None:
    """A stream dropped while its chunks filled the outbox may leave the sender nothing to pop: the discard
    itself must wake the producers (a paused receive loop) that wait for room."""
    box, rooms = outbox(high_frames=4, high_bytes=1_000)
    box.push("feed update")
    for n in range(3):
        box.push(f"chunk {n}", tag="stream-1")
    assert box.claim_room() is False
    box.discard(("snapshot", "never queued"))
    assert rooms.count == 0  # nothing freed
    box.discard_tagged("stream-1")
    assert rooms.count == 1 and box.has_room
    assert drain(box) == ["feed update"]
