"""The run record, its statuses and the legal moves between them."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

from bridge.errors import ValidationError


class RunStatus(StrEnum):
    DELAYED = "DELAYED"
    QUEUED = "QUEUED"
    EXECUTING = "EXECUTING"
    WAITING = "WAITING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    CRASHED = "CRASHED"
    EXPIRED = "EXPIRED"
    TIMED_OUT = "TIMED_OUT"  # past its maxDuration (bridge/runtime/max_duration.py)

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.FAILED,
        RunStatus.CANCELED,
        RunStatus.CRASHED,
        RunStatus.EXPIRED,
        RunStatus.TIMED_OUT,
    }
)

LEGAL_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.DELAYED: frozenset({RunStatus.QUEUED, RunStatus.CANCELED}),
    RunStatus.QUEUED: frozenset({RunStatus.EXECUTING, RunStatus.CANCELED, RunStatus.CRASHED, RunStatus.EXPIRED}),
    RunStatus.EXECUTING: frozenset(
        {
            RunStatus.WAITING,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELED,
            RunStatus.CRASHED,
            RunStatus.TIMED_OUT,
        }
    ),
    RunStatus.WAITING: frozenset(
        {RunStatus.EXECUTING, RunStatus.CANCELED, RunStatus.CRASHED, RunStatus.FAILED, RunStatus.TIMED_OUT}
    ),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELED: frozenset(),
    RunStatus.CRASHED: frozenset(),
    RunStatus.EXPIRED: frozenset(),
    RunStatus.TIMED_OUT: frozenset(),
}
JSON_TYPE = "application/json"
PACKET_TYPE = "application/store"  # the official payloadType of a value stored apart from its run


# The deepest a stored value (payload, metadata, output, input value, completion data) may nest. orjson
# encodes at most 254 levels, and a value travels inside envelopes (a run in storage, a run in a frame's list
# of runs): a value accepted at 254 levels could be stored and then never be encoded again.
MAX_JSON_DEPTH = 128
_ORJSON_MAX_DEPTH = 254
_DEPTH_HEADROOM = _ORJSON_MAX_DEPTH - MAX_JSON_DEPTH


def encode_value(value: Any) -> bytes:
    """A value to store, as JSON; ValidationError if it is not JSON or nests deeper than MAX_JSON_DEPTH levels.

    The value is encoded once, inside _DEPTH_HEADROOM single-item lists: orjson refuses what nests deeper
    than it encodes, so the same C call that encodes the value checks its depth, with no walk in Python."""
    wrapped = value
    for _ in range(_DEPTH_HEADROOM):
        wrapped = [wrapped]
    try:
        return orjson.dumps(wrapped)[_DEPTH_HEADROOM:-_DEPTH_HEADROOM]
    except TypeError as exc:
        try:
            orjson.dumps(value)
        except TypeError:
            raise ValidationError(f"value is not JSON-serialisable: {exc}") from exc
        raise ValidationError(f"value nests deeper than {MAX_JSON_DEPTH} levels") from exc


def can_transition(current: RunStatus, target: RunStatus) -> bool:
    return target in LEGAL_TRANSITIONS[current]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ms_from_iso(text: str | None) -> int | None:
    """The inverse of `iso_from_ms` (any ISO 8601 time with a zone; a naive one is UTC)."""
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp() * 1000)


def new_id(prefix: str) -> str:
    """`run_` + 24 random base32-ish characters: unguessable, URL- and Redis-key-safe."""
    return prefix + secrets.token_hex(12)


@dataclass
class RunError:
    message: str
    name: str = "Error"
    stack_trace: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "message": self.message, "stackTrace": self.stack_trace}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunError:
        return cls(
            message=data.get("message", ""), name=data.get("name", "Error"), stack_trace=data.get("stackTrace", "")
        )


@dataclass
class Run:
    """One run of a task. `version` grows by one on every stored change; feeds dedupe by it."""

    id: str
    task_identifier: str
    payload: Any = None
    status: RunStatus = RunStatus.QUEUED
    output: Any = None
    error: RunError | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    created_at: int = field(default_factory=now_ms)
    updated_at: int = 0
    started_at: int | None = None
    finished_at: int | None = None
    idempotency_key: str | None = None
    batch_id: str | None = None
    is_test: bool = False
    realtime_streams: list[str] = field(default_factory=list)
    number: int = 0
    version: int = 1
    # Durable execution (docs/durability.md). An attempt is one try of the task by the retry policy; an
    # execution is one worker running the function from the top (a resume after a wait starts a new one
    # in the same attempt), and fences off any older execution still running somewhere.
    attempt_number: int = 0
    max_attempts: int | None = None  # the trigger's override of the task's retry policy
    executions: int = 0
    waiting_on: str | None = None  # the wait token a parked run resumes on; no process holds it meanwhile
    waiting_input: str | None = None  # the input stream whose next value completes `waiting_on`
    metadata_ops: int = 0  # metadata changes applied, so a replayed change is not applied twice
    # A child run (`trigger_and_wait` in a task): its parent, the root of its tree, its depth (0: no parent),
    # and the parent's wait token its end completes (with its batch's other runs, for a batch).
    parent_task_run_id: str | None = None
    root_task_run_id: str | None = None
    depth: int = 0
    resumes: str | None = None
    trace_context: str | None = None  # the trigger's span as a W3C traceparent (bridge/tracing.py); not public
    # When it starts (bridge/runtime/engine.py): DELAYED until `delay_until`, then QUEUED (`queued_at`); a run
    # with a `ttl` (as the official API shows it, "10m") still QUEUED at `expires_at` ends EXPIRED.
    delay_until: int | None = None
    queued_at: int | None = None
    ttl: str | None = None
    expires_at: int | None = None
    expired_at: int | None = None
    debounce_until: int | None = None  # a debounced run: the latest it may start (bridge/runtime/debounce.py)
    # Its queue (bridge/runtime/queues.py): a run with a concurrency limit holds a slot of the gate (queue,
    # concurrency key) while a worker has it; `priority` seconds order it ahead of runs waiting for a slot.
    queue: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    priority: float = 0.0
    # Its maxDuration (seconds, the trigger's; else its task's applies) and the compute time its executions
    # that parked or were handed back used (bridge/runtime/max_duration.py).
    max_duration: float | None = None
    compute_ms: int = 0
    # A payload or output stored apart from the run (bridge/runtime/packets.py): its storage path, the value None.
    payload_packet: str | None = None
    output_packet: str | None = None

    def __post_init__(self) -> None:
        if not self.updated_at:
            self.updated_at = self.created_at

    @property
    def is_retrying(self) -> bool:
        """Between two attempts: EXECUTING, waiting for the retry's backoff with no process holding it."""
        return self.status is RunStatus.EXECUTING and self.waiting_on is not None

    @property
    def duration_ms(self) -> int:
        if self.started_at is None or self.finished_at is None:
            return 0
        return self.finished_at - self.started_at

    def to_public(self) -> dict[str, Any]:
        """The shape every client sees (WebSocket frames, SDK, `/api/v3/runs`): the official field names."""
        return {
            "id": self.id,
            "taskIdentifier": self.task_identifier,
            "status": self.status.value,
            # A packet's storage path, as the official run shape has it (`payloadType: "application/store"`).
            "payload": self.payload_packet or self.payload,
            "payloadType": PACKET_TYPE if self.payload_packet else JSON_TYPE,
            "output": self.output_packet or self.output,
            "outputType": PACKET_TYPE if self.output_packet else JSON_TYPE,
            "error": self.error.to_dict() if self.error else None,
            "metadata": self.metadata,
            "tags": self.tags,
            "createdAt": iso_from_ms(self.created_at),
            "updatedAt": iso_from_ms(self.updated_at),
            "startedAt": iso_from_ms(self.started_at),
            "finishedAt": iso_from_ms(self.finished_at),
            "delayedUntil": iso_from_ms(self.delay_until),
            "queuedAt": iso_from_ms(self.queued_at),
            "expiredAt": iso_from_ms(self.expired_at),
            "ttl": self.ttl,
            "idempotencyKey": self.idempotency_key,
            "batchId": self.batch_id,
            "durationMs": self.duration_ms,
            "costInCents": 0,
            "isTest": self.is_test,
            "realtimeStreams": self.realtime_streams,
            "number": self.number,
            "version": self.version,
            "attemptNumber": self.attempt_number,
        }

    @classmethod
    def from_public(cls, data: dict[str, Any]) -> Run:
        """A run as `to_public` gives it (what a remote SDK reads); what that shape leaves out (durable
        execution's bookkeeping) keeps its default."""
        error = data.get("error")
        payload_packet = data.get("payload") if data.get("payloadType") == PACKET_TYPE else None
        output_packet = data.get("output") if data.get("outputType") == PACKET_TYPE else None
        return cls(
            id=data["id"],
            task_identifier=data["taskIdentifier"],
            payload=None if payload_packet else data.get("payload"),
            status=RunStatus(data["status"]),
            output=None if output_packet else data.get("output"),
            error=RunError.from_dict(error) if error else None,
            metadata=data.get("metadata") or {},
            tags=list(data.get("tags") or []),
            created_at=ms_from_iso(data["createdAt"]) or 0,
            updated_at=ms_from_iso(data.get("updatedAt")) or 0,
            started_at=ms_from_iso(data.get("startedAt")),
            finished_at=ms_from_iso(data.get("finishedAt")),
            idempotency_key=data.get("idempotencyKey"),
            batch_id=data.get("batchId"),
            is_test=bool(data.get("isTest")),
            realtime_streams=list(data.get("realtimeStreams") or []),
            number=data.get("number", 0),
            version=data.get("version", 0),
            attempt_number=data.get("attemptNumber", 0),
            delay_until=ms_from_iso(data.get("delayedUntil")),
            queued_at=ms_from_iso(data.get("queuedAt")),
            ttl=data.get("ttl"),
            expired_at=ms_from_iso(data.get("expiredAt")),
            payload_packet=payload_packet,
            output_packet=output_packet,
        )

    def to_storage(self) -> bytes:
        stored = {f.name: _storable(getattr(self, f.name)) for f in fields(self)}
        if self.trace_context is None:  # stored only when traced: older processes can read the record
            del stored["trace_context"]
        return orjson.dumps(stored)

    @classmethod
    def from_storage(cls, raw: bytes | str) -> Run:
        # Fields this version does not know (stored by a newer process, during a rolling deploy) are ignored.
        data = {key: value for key, value in orjson.loads(raw).items() if key in _RUN_FIELDS}
        data["status"] = RunStatus(data["status"])
        if data.get("error") is not None:
            data["error"] = RunError(**data["error"])
        return cls(**data)


_RUN_FIELDS = frozenset(f.name for f in fields(Run))


def _storable(value: Any) -> Any:
    if isinstance(value, RunStatus):
        return value.value
    if isinstance(value, RunError):
        return {"message": value.message, "name": value.name, "stack_trace": value.stack_trace}
    return value
