"""Errors with a stable code and the HTTP status they map to.

The same code names the error in HTTP bodies (`{"error": message, "code": code}`) and in
WebSocket error frames, so clients can branch on it.
"""

from __future__ import annotations


class BridgeError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ValidationError(BridgeError):
    code = "invalid_request"
    status = 400


class PayloadTooLargeError(BridgeError):
    code = "payload_too_large"
    status = 413


class UnauthorizedError(BridgeError):
    code = "unauthorized"
    status = 401


class ForbiddenError(BridgeError):
    code = "forbidden"
    status = 403


class NotFoundError(BridgeError):
    code = "not_found"
    status = 404


class ConflictError(BridgeError):
    code = "conflict"
    status = 409


class LengthRequiredError(BridgeError):
    code = "length_required"
    status = 411


class UnprocessableError(BridgeError):
    code = "unprocessable"
    status = 422


class OptionError(UnprocessableError):
    """A trigger option refused: `field` names it as the request spelled it (`options.queue`, or `queue=` in
    the Python SDK)."""

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


class UnsupportedOptionError(OptionError):
    """A trigger option the bridge does not implement: refused, never ignored."""

    code = "unsupported_option"


class InvalidOptionError(OptionError, ValidationError):
    """A trigger option's value out of its bounds (a queue's name, a concurrency limit, a priority...): a
    ValidationError, answered 422 naming the field."""

    code = "invalid_option"


class TooManyError(BridgeError):
    code = "too_many"
    status = 429


class ClientGoneError(BridgeError):
    """The client closed the connection before its request body was complete: nobody reads the answer."""

    code = "client_closed_request"
    status = 499  # nginx's "client closed request"; never seen by a client, and not a 5xx in any log


class BackendUnavailableError(BridgeError):
    code = "backend_unavailable"
    status = 503


class RunFinishedError(BridgeError):
    """The run already reached a terminal status, so the change was not applied."""

    code = "run_finished"
    status = 400


class StreamOrderError(ConflictError):
    """An append at an expected index found the stream shorter, or holding other chunks there: storing it
    would leave a gap or store a chunk twice, so nothing was stored."""

    code = "stream_conflict"

    def __init__(self, message: str, *, fewer: bool) -> None:
        super().__init__(message)
        self.fewer = fewer  # the stream holds fewer chunks than expected: some were lost


class StreamFailedError(BridgeError):
    """An output stream stopped for good at `next_index`: a batch of its chunks could not be stored in order
    (the backend stayed unavailable past the writer's retries, or the stream lost chunks). Nothing is stored
    after it; its writer's pending and later appends raise this, and its readers end with it."""

    code = "stream_failed"
    status = 409

    def __init__(self, message: str, next_index: int) -> None:
        super().__init__(message)
        self.next_index = next_index


class StreamResetError(BridgeError):
    """A stream's storage was lost or replaced (Redis flushed, a failover to a replica that missed writes, the
    retention passed, an in-memory bridge restarted): its epoch is not the one a reader read under, or it holds
    fewer chunks than the reader already read. What the reader holds may not be what the stream holds now, so
    it must not resume at `next_index`: it can only read the stream again from index 0, without an epoch."""

    code = "stream_reset"
    status = 409

    def __init__(self, message: str, next_index: int) -> None:
        super().__init__(message)
        self.next_index = next_index  # where the reader was


class NonDeterminismError(BridgeError):
    """A replayed run reached a durable step that differs from its journal at the same position: the task's
    code changed (or depends on something outside its steps) since the run recorded that step."""

    code = "non_determinism"
    status = 409


class AbortTaskRunError(Exception):
    """Raised by a task to fail its run at once: no retry, whatever its retry policy."""


class TaskRunError(Exception):
    """A child run's error (`TaskRunResult.error`): the name, message and stack trace its run stored."""

    def __init__(self, message: str, name: str = "Error", stack_trace: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.name = name
        self.stack_trace = stack_trace


class SubtaskUnwrapError(Exception):
    """`TaskRunResult.unwrap()` on a child run that did not complete; `cause` is its error."""

    def __init__(self, task_id: str, run_id: str, cause: TaskRunError) -> None:
        super().__init__(f"Error in {task_id}: {cause.message}")
        self.task_id = task_id
        self.run_id = run_id
        self.cause = cause
        self.__cause__ = cause  # tracebacks show the child's error
