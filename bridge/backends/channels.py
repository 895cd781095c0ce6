"""The names of the change-notification channels, and the wire format of a stream channel's message."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from bridge.models import Run

CANCEL_CHANNEL = "control:cancel"


def run_channel(run_id: str) -> str:
    return f"run:{run_id}"


def tag_channel(tag: str) -> str:
    return f"tag:{tag}"


def batch_channel(batch_id: str) -> str:
    return f"batch:{batch_id}"


def stream_channel(run_id: str, key: str) -> str:
    return f"stream:{run_id}:{key}"


def waitpoint_channel(token_id: str) -> str:
    return f"waitpoint:{token_id}"


def channel_owner(channel: str) -> str:
    """What a channel belongs to: the run of a run or stream channel, the token of a wait token's, else the channel
    itself. A backend that shards its data keeps a channel with its owner's (ids never hold a ':')."""
    kind, _, rest = channel.partition(":")
    if kind == "stream":
        return rest.partition(":")[0]
    if kind in ("run", "waitpoint"):
        return rest
    return channel


def channels_of(run: Run) -> list[str]:
    """Where a stored run is published: its own channel, each of its tags', and its batch's."""
    channels = [run_channel(run.id), *(tag_channel(t) for t in run.tags)]
    if run.batch_id:
        channels.append(batch_channel(run.batch_id))
    return channels


class ChunksMessage(NamedTuple):
    first: int
    epoch: str | None  # the stream's epoch when they were stored (None from a bridge older than epochs)
    chunks: list[bytes]


def encode_chunks_message(first_index: int, epoch: str, chunks: Sequence[bytes]) -> bytes:
    """The notification of chunks `first_index`, `first_index + 1`, ... of the stream's epoch `epoch`:
    "<first> <epoch>" then one chunk per line (JSON text never holds a raw newline). Without chunks, it
    announces that the stream failed and stops at `first_index` (`fail_stream`)."""
    return b"\n".join([b"%d %s" % (first_index, epoch.encode()), *chunks])


def decode_chunks_message(raw: bytes) -> ChunksMessage:
    header, *chunks = raw.split(b"\n")
    first, _, epoch = header.partition(b" ")
    return ChunksMessage(int(first), epoch.decode() or None, chunks)
