"""The frames of the bridge's WebSocket protocol (docs/protocol.md): constants and field validation."""

from __future__ import annotations

from typing import Any

from bridge.config import Limits
from bridge.errors import BridgeError, UnauthorizedError, ValidationError
from bridge.runtime.access import INVALID_TOKEN_MESSAGE, Principal, authenticate

PROTOCOL_VERSION = 1
CLOSE_SLOW_CONSUMER = 4008
CLOSE_MESSAGE_TOO_BIG = 1009  # a client frame over Limits.max_frame_bytes (RFC 6455)
MAX_SUBSCRIPTION_ID_LENGTH = 64
MAX_TOKEN_LENGTH = 16_384

Frame = dict[str, Any]


def welcome_frame(limits: Limits) -> Frame:
    return {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "limits": {
            "maxSubscriptions": limits.max_subscriptions_per_connection,
            "maxFrameBytes": limits.max_frame_bytes,
            "maxSubscribeFrameBytes": limits.max_control_frame_bytes,
        },
    }


def error_frame(subscription_id: str | None, error: BridgeError) -> Frame:
    return {"type": "error", "id": subscription_id, "code": error.code, "message": error.message}


def internal_error_frame(subscription_id: str | None) -> Frame:
    """Our bug, reported on the subscription (or frame) it broke; the connection stays."""
    return {"type": "error", "id": subscription_id, "code": "internal", "message": "internal error"}


def required_string(frame: Frame, field: str, max_length: int) -> str:
    value = frame.get(field)
    if not isinstance(value, str) or not value or len(value) > max_length:
        raise ValidationError(f"{field} must be a non-empty string of at most {max_length} characters")
    return value


def frame_principal(secret_key: str, frame: Frame) -> Principal:
    """Who sent the frame: its `token`, or anonymous without one."""
    token = frame.get("token")
    if token is not None and (not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH):
        raise UnauthorizedError(INVALID_TOKEN_MESSAGE)  # malformed: like a bad token, not a bad frame
    return authenticate(secret_key, token)
