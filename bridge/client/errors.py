"""The bridge's error answers (`{"error", "code"}` bodies, WebSocket `error` frames) as the SDK's exceptions,
the same classes a local bridge raises."""

from __future__ import annotations

from bridge.errors import (
    BackendUnavailableError,
    BridgeError,
    ConflictError,
    ForbiddenError,
    InvalidOptionError,
    LengthRequiredError,
    NonDeterminismError,
    NotFoundError,
    PayloadTooLargeError,
    RunFinishedError,
    TooManyError,
    UnauthorizedError,
    UnsupportedOptionError,
    ValidationError,
)

_BY_CODE: dict[str, type[BridgeError]] = {
    error.code: error
    for error in (
        ValidationError,
        PayloadTooLargeError,
        UnauthorizedError,
        ForbiddenError,
        NotFoundError,
        ConflictError,
        LengthRequiredError,
        TooManyError,
        BackendUnavailableError,
        RunFinishedError,
        NonDeterminismError,
        UnsupportedOptionError,
        InvalidOptionError,
    )
}
_BY_STATUS: dict[int, type[BridgeError]] = {
    **{error.status: error for error in _BY_CODE.values() if error is not RunFinishedError},
    409: ConflictError,
    422: ValidationError,  # the official wait token route's status for what a local bridge refuses as invalid
}
KEY_HINT = "the secret key must be the one the bridge runs with (BRIDGE_SECRET_KEY)"


def remote_error(code: object, message: str, status: int | None, bridge_url: str) -> BridgeError:
    """The exception for an error answer: by its code when its status agrees (a 403 carries the code
    `unauthorized` for the official clients), else by its status; a 5xx is the bridge being unavailable."""
    error = _BY_CODE.get(code) if isinstance(code, str) else None
    if error is None or (status is not None and error.status != status):
        error = _BY_STATUS.get(status or 0) or (BackendUnavailableError if (status or 0) >= 500 else BridgeError)
    if error is UnauthorizedError:  # every remote call authenticates with the secret key
        message = f"the bridge at {bridge_url} refused the secret key ({message}): {KEY_HINT}"
    return error(message)
