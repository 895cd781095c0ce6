"""Runs as rows of the Electric "shape" the official run feeds read (`"public"."TaskRun"`).

Values are encoded the way Electric sends Postgres columns: every value a string (or null),
booleans `t`/`f`, timestamps ISO 8601 without a zone, text arrays as Postgres array literals,
JSON columns as JSON text. The raw status is the database enum the official client maps back.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

import orjson

from bridge.models import JSON_TYPE, PACKET_TYPE, Run, RunStatus

DB_STATUS = {
    RunStatus.DELAYED: "DELAYED",
    RunStatus.QUEUED: "PENDING",
    RunStatus.EXECUTING: "EXECUTING",
    RunStatus.WAITING: "WAITING_TO_RESUME",
    RunStatus.COMPLETED: "COMPLETED_SUCCESSFULLY",
    RunStatus.FAILED: "COMPLETED_WITH_ERRORS",
    RunStatus.CANCELED: "CANCELED",
    RunStatus.CRASHED: "CRASHED",
    RunStatus.EXPIRED: "EXPIRED",
    RunStatus.TIMED_OUT: "TIMED_OUT",
}

_TYPES: dict[str, dict[str, Any]] = {
    "id": {"type": "text"},
    "taskIdentifier": {"type": "text"},
    "friendlyId": {"type": "text"},
    "status": {"type": "text"},
    "createdAt": {"type": "timestamp"},
    "updatedAt": {"type": "timestamp"},
    "startedAt": {"type": "timestamp"},
    "delayUntil": {"type": "timestamp"},
    "queuedAt": {"type": "timestamp"},
    "expiredAt": {"type": "timestamp"},
    "completedAt": {"type": "timestamp"},
    "idempotencyKey": {"type": "text"},
    "number": {"type": "int4"},
    "isTest": {"type": "bool"},
    "usageDurationMs": {"type": "int4"},
    "costInCents": {"type": "float8"},
    "baseCostInCents": {"type": "float8"},
    "ttl": {"type": "text"},
    "payload": {"type": "text"},
    "payloadType": {"type": "text"},
    "metadata": {"type": "text"},
    "metadataType": {"type": "text"},
    "output": {"type": "text"},
    "outputType": {"type": "text"},
    "runTags": {"type": "text", "dims": 1},
    "error": {"type": "jsonb"},
    "realtimeStreams": {"type": "text", "dims": 1},
}
COLUMNS = tuple(_TYPES)
PROTECTED_COLUMNS = frozenset({"id", "taskIdentifier", "friendlyId", "status", "createdAt"})


def schema_header(columns: tuple[str, ...]) -> str:
    return orjson.dumps({name: _TYPES[name] for name in columns}).decode()


def visible_columns(skip: str | None) -> tuple[str, ...]:
    """The columns left after `skipColumns=a,b` (the protected ones cannot be skipped)."""
    if not skip:
        return COLUMNS
    skipped = {name.strip() for name in skip.split(",")} - PROTECTED_COLUMNS
    return tuple(name for name in COLUMNS if name not in skipped)


def _timestamp(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None).isoformat(timespec="milliseconds")


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _text_array(values: list[str]) -> str:
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return "{" + ",".join(f'"{v}"' for v in escaped) + "}"


def _error(run: Run) -> str | None:
    if run.error is None:
        return None
    return orjson.dumps(
        {
            "type": "BUILT_IN_ERROR",
            "name": run.error.name,
            "message": run.error.message,
            "stackTrace": run.error.stack_trace,
        }
    ).decode()


def row_value(run: Run, columns: tuple[str, ...]) -> dict[str, str | None]:
    every: dict[str, str | None] = {
        "id": run.id,
        "taskIdentifier": run.task_identifier,
        "friendlyId": run.id,
        # The official client maps RETRYING_AFTER_FAILURE to EXECUTING, as the bridge's own status says.
        "status": "RETRYING_AFTER_FAILURE" if run.is_retrying else DB_STATUS[run.status],
        "createdAt": _timestamp(run.created_at),
        "updatedAt": _timestamp(run.updated_at),
        "startedAt": _timestamp(run.started_at),
        "delayUntil": _timestamp(run.delay_until),
        "queuedAt": _timestamp(run.queued_at),
        "expiredAt": _timestamp(run.expired_at),
        "completedAt": _timestamp(run.finished_at),
        "idempotencyKey": run.idempotency_key,
        "number": str(run.number),
        "isTest": "t" if run.is_test else "f",
        "usageDurationMs": str(run.duration_ms),
        "costInCents": "0",
        "baseCostInCents": "0",
        "ttl": run.ttl,
        # A packet is its storage path: the official client fetches it (`/api/v1/runs/{id}/packets/payload`).
        "payload": run.payload_packet or _json_text(run.payload),
        "payloadType": PACKET_TYPE if run.payload_packet else JSON_TYPE,
        "metadata": _json_text(run.metadata),
        "metadataType": JSON_TYPE,
        "output": run.output_packet or _json_text(run.output),
        "outputType": PACKET_TYPE if run.output_packet else JSON_TYPE,
        "runTags": _text_array(run.tags),
        "error": _error(run),
        "realtimeStreams": _text_array(run.realtime_streams),
    }
    return {name: every[name] for name in columns}


def row_key(run_id: str) -> str:
    return f'"public"."TaskRun"/"{run_id}"'


ENCODED_ROWS_MAX_BYTES = 16 * 1024 * 1024  # docs/limits.md


class EncodedRows:
    """Row values encoded once per run state and column set, for every feed session that sends that state:
    a run's version names one stored state, so (id, version, columns) is the whole key. Kept least recently
    used first out, at most `max_bytes` of JSON together; a value larger than that is encoded every time."""

    def __init__(self, max_bytes: int = ENCODED_ROWS_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._bytes = 0
        self._values: OrderedDict[tuple[str, int, tuple[str, ...]], tuple[orjson.Fragment, int]] = OrderedDict()

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def value(self, run: Run, columns: tuple[str, ...]) -> orjson.Fragment:
        key = (run.id, run.version, columns)
        kept = self._values.get(key)
        if kept is not None:
            self._values.move_to_end(key)
            return kept[0]
        raw = orjson.dumps(row_value(run, columns))
        encoded = orjson.Fragment(raw)
        if len(raw) <= self._max_bytes:
            self._values[key] = (encoded, len(raw))
            self._bytes += len(raw)
            while self._bytes > self._max_bytes:
                _, (_, size) = self._values.popitem(last=False)
                self._bytes -= size
        return encoded
