"""One received frame: parsed, validated, and handled by its type (docs/protocol.md).

A frame that fails is answered with an `error` frame carrying its id; the connection stays.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import orjson

from bridge.errors import BridgeError, NotFoundError, PayloadTooLargeError, ValidationError
from bridge.runtime.access import Principal
from bridge.runtime.core import Bridge
from bridge.runtime.feeds import FeedSpec
from bridge.runtime.input_streams import send_input
from bridge.server.websocket.protocol import (
    MAX_SUBSCRIPTION_ID_LENGTH,
    Frame,
    frame_principal,
    internal_error_frame,
    required_string,
)
from bridge.server.websocket.subscriptions import (
    AnySubscription,
    StreamRequest,
    Subscriptions,
    authorize_feed,
    authorize_stream,
)

log = logging.getLogger(__name__)


class Session(Protocol):
    """What handling a frame needs from its connection."""

    bridge: Bridge
    subscriptions: Subscriptions

    def send(self, body: dict[str, Any]) -> None: ...

    def send_error(self, subscription_id: str | None, error: BridgeError) -> None: ...

    async def add_feed(self, subscription_id: str, spec: FeedSpec, principal: Principal) -> None: ...

    def add_stream(self, subscription_id: str, request: StreamRequest, principal: Principal) -> None: ...

    async def drop(self, subscription: AnySubscription) -> None: ...

    async def flush_run_streams(self, run_id: str) -> None: ...


async def handle_frame(session: Session, raw: str) -> None:
    try:
        frame = orjson.loads(raw)
    except orjson.JSONDecodeError:
        session.send_error(None, ValidationError("the frame is not valid JSON"))
        return
    if not isinstance(frame, dict):
        session.send_error(None, ValidationError('a frame is a JSON object with a "type"'))
        return
    kind = frame.get("type")
    subscription_id = frame.get("id") if isinstance(frame.get("id"), str) else None
    try:
        if kind == "ping":
            session.send({"type": "pong", "id": subscription_id})
        elif kind == "send":
            await _send_input(session, frame)
        elif kind == "complete":
            await _complete_token(session, frame)
        elif kind in ("subscribe", "unsubscribe"):
            limit = session.bridge.settings.limits.max_control_frame_bytes
            if len(raw.encode()) > limit:  # bytes as sent, not characters; only `send` frames carry big values
                raise PayloadTooLargeError(f"a {kind} frame is at most {limit} bytes")
            await (_subscribe(session, frame) if kind == "subscribe" else _unsubscribe(session, frame))
        else:
            raise ValidationError(f"unknown frame type {str(kind)[:40]!r}")
    except BridgeError as error:
        session.send_error(subscription_id, error)
    except Exception:  # our bug: report it on this subscription, keep the connection
        log.exception("websocket frame %r failed", kind)
        session.send(internal_error_frame(subscription_id))


async def _subscribe(session: Session, frame: Frame) -> None:
    subscription_id = required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
    session.subscriptions.check_free(subscription_id)
    session.subscriptions.check_room()
    principal = frame_principal(session.bridge.settings.secret_key, frame)
    if frame.get("feed") == "stream":
        request = await authorize_stream(session.bridge, frame, principal)
        session.add_stream(subscription_id, request, principal)
    else:
        spec = await authorize_feed(session.bridge, frame, principal)
        await session.add_feed(subscription_id, spec, principal)


async def _unsubscribe(session: Session, frame: Frame) -> None:
    subscription_id = required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
    subscription = session.subscriptions.get(subscription_id)
    if subscription is None:
        raise NotFoundError(f"no subscription {subscription_id!r} on this connection")
    await session.drop(subscription)
    session.send({"type": "unsubscribed", "id": subscription_id})


async def _send_input(session: Session, frame: Frame) -> None:
    """A value for a run's input stream: acknowledged with its index once stored. With `idempotencyKey`,
    a frame sent again with that key (e.g. after a reconnect) stores nothing and is acknowledged with the
    first one's index."""
    request_id = required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
    run_id = required_string(frame, "runId", 128)
    stream_id = required_string(frame, "streamId", 128)
    if "data" not in frame:
        raise ValidationError("a send frame needs a data field")
    principal = frame_principal(session.bridge.settings.secret_key, frame)
    principal.require_any("write", [("inputStreams", run_id)])
    key = frame.get("idempotencyKey")
    index = await send_input(session.bridge.engine, run_id, stream_id, frame["data"], key)
    await session.flush_run_streams(run_id)
    session.send({"type": "ack", "id": request_id, "index": index})


async def _complete_token(session: Session, frame: Frame) -> None:
    """Completes a wait token: acknowledged once stored (also when it was done already)."""
    request_id = required_string(frame, "id", MAX_SUBSCRIPTION_ID_LENGTH)
    token_id = required_string(frame, "tokenId", 128)
    if "data" not in frame:
        raise ValidationError('a complete frame needs a data field ("data": null completes without a value)')
    frame_principal(session.bridge.settings.secret_key, frame).require_any("write", [("waitpoints", token_id)])
    await session.bridge.waitpoints.complete(token_id, frame["data"])
    session.send({"type": "ack", "id": request_id})
