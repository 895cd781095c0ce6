"""`RemoteTransport`: the SDK's calls on a bridge in another process, over its HTTP API (the official
Trigger.dev routes) and its WebSocket (subscriptions and stream reads).

Every request authenticates with the bridge's secret key and is bounded by the transport's timeout. A call
is tried again (`retries.py`) when it failed before it was sent (no connection), or when it is safe to
repeat: reads, cancels and completions are; a trigger and an input send are made so (each call sends a
fresh `x-trigger-request-idempotency-key`, which the bridge honours, as the official SDK does); a batch's
items are (deduplicated by index), and a packet upload. Creating a batch, a wait token without an idempotency
key, and a reschedule, are not. A payload of 128 KiB or more goes up as a packet first, as the official SDK does.

Subscriptions use the WebSocket rather than the Electric long-poll: each frame carries the whole run with
its `version` (the long-poll rows have neither the version nor `batchId` and `attemptNumber`), changes are
pushed rather than polled, and a stream's `end` says why it ended (finished, idle, or the stream failed),
which the SSE route cannot.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import ssl
import uuid
from collections.abc import AsyncGenerator, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from bridge.client.decoding import run_from_retrieve, token_from_retrieve
from bridge.client.errors import remote_error
from bridge.client.results import BatchHandle, CreatedToken, RetrievedToken, RunHandle
from bridge.client.retries import retrying
from bridge.client.websocket import Frame, subscription_frames
from bridge.durations import Moment, parse_duration_seconds
from bridge.errors import (
    BackendUnavailableError,
    ConflictError,
    StreamFailedError,
    StreamResetError,
    ValidationError,
)
from bridge.models import PACKET_TYPE, Run, now_ms
from bridge.runtime.access import create_public_token, run_access_token, waitpoint_access_token
from bridge.runtime.debounce import parse_debounce
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.feeds import FeedSpec
from bridge.runtime.max_duration import check_max_duration
from bridge.runtime.packets import decode_data
from bridge.runtime.queues import check_options as check_queue_options
from bridge.runtime.queues import parse_queue
from bridge.runtime.waitpoints import Timeout

DEFAULT_TIMEOUT_SECONDS = 30.0
REQUEST_KEY_HEADER = "x-trigger-request-idempotency-key"  # the official clients' per-call retry key
JSON_TYPE = "application/json"
OFFLOAD_BYTES = 128 * 1024  # as the official SDK: a payload this big is uploaded as a packet before the trigger
# Failures that mean the request never reached the bridge: any call may be sent again.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


def _segment(value: str) -> str:
    """An id as one path segment, whatever characters it holds."""
    return quote(value, safe="")


def _json(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise ValidationError(f"value is not JSON-serialisable: {exc}") from exc


def _duration(value: str | int | float | timedelta) -> str:
    """A duration as the official routes take it, a string like "90s" (checked here, as a local call would)."""
    return value if isinstance(value, str) else f"{parse_duration_seconds(value):.3f}s"


def _timeout(value: Moment) -> str:
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return _duration(value)


def _queue(queue: str | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A trigger's queue as the official routes take it (checked here, as a local call would)."""
    name, limit = parse_queue(queue, "queue", "concurrency_limit")
    given = {"name": name, "concurrencyLimit": limit}
    return {key: value for key, value in given.items() if value is not None} if queue is not None else None


def _trigger_options(options: TriggerOptions, payload_type: str) -> dict[str, Any]:
    check_queue_options(options.queue, options.concurrency_key, options.priority)
    check_max_duration(options.max_duration, "max_duration")
    key_ttl = options.idempotency_key_ttl
    debounce = parse_debounce(options.debounce, math.inf)  # checked here, as a local call would; bounded there
    given = {
        "payloadType": payload_type,
        "tags": options.tags,
        "idempotencyKey": options.idempotency_key,
        "idempotencyKeyTTL": None if key_ttl is None else _duration(key_ttl),
        "metadata": options.metadata,
        "maxAttempts": options.max_attempts,
        "delay": None if options.delay is None else _timeout(options.delay),
        "ttl": None if options.ttl is None else _duration(options.ttl),
        "debounce": None if debounce is None else debounce.to_official(),
        "queue": _queue(options.queue),
        "concurrencyKey": options.concurrency_key,
        "priority": options.priority,
        "maxDuration": options.max_duration,
    }
    return {name: value for name, value in given.items() if value is not None}


def _subscribe_fields(spec: FeedSpec) -> Frame:
    if spec.kind == "run":
        return {"feed": "run", "runId": spec.run_id}
    if spec.kind == "batch":
        return {"feed": "batch", "batchId": spec.batch_id}
    # A second wider than the window: the feed's own rule (`FeedSpec.admits`) draws its exact edge here.
    return {"feed": "tags", "tags": list(spec.tags), "createdAt": (now_ms() - spec.since_ms) / 1000 + 1}


class RemoteTransport:
    def __init__(self, url: str, secret_key: str, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.url = url.rstrip("/")
        self._secret_key = secret_key
        self.timeout = timeout
        self._ssl: ssl.SSLContext | None = None
        self._http: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def secret_key(self) -> str:
        return self._secret_key

    def _client(self) -> httpx.AsyncClient:
        """One pooled client per event loop: a client cannot outlive its loop (e.g. `asyncio.run` per call),
        so one made on an earlier loop, whose connections went with it, is dropped."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._loop is not loop:
            self._ssl = self._ssl or ssl.create_default_context()  # ~20 ms: once per transport, not per client
            self._http = httpx.AsyncClient(
                base_url=self.url,
                timeout=self.timeout,
                verify=self._ssl,
                headers={"Authorization": f"Bearer {self._secret_key}"},
            )
            self._loop = loop
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def _call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        *,
        repeatable: bool,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request, tried again as the module says; an error answer raises the SDK's exception."""

        async def attempt() -> httpx.Response:
            response = await self._client().request(
                method, path, content=body, headers={"content-type": JSON_TYPE, **(headers or {})}
            )
            if response.is_error:
                raise self._error(response)
            return response

        def may_retry(exc: Exception) -> bool:
            return isinstance(exc, _NOT_SENT) or (
                repeatable and isinstance(exc, (httpx.TransportError, BackendUnavailableError))
            )

        try:
            return await retrying(attempt, may_retry)
        except httpx.TransportError as exc:
            raise BackendUnavailableError(f"could not reach the bridge at {self.url}: {exc!r}") from exc

    def _error(self, response: httpx.Response) -> Exception:
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("error"), str):
            body = {"error": f"{response.request.method} {response.request.url} answered {response.status_code}"}
        return remote_error(body.get("code"), body["error"], response.status_code, self.url)

    def _handle(self, run_id: str, task_id: str, is_cached: bool) -> RunHandle:
        return RunHandle(run_id, task_id, run_access_token(self._secret_key, run_id), is_cached)

    async def _payload(self, payload: Any) -> tuple[str, str]:
        """(payload, payloadType) as the trigger routes take them: a big one uploaded as a packet first."""
        encoded = _json(payload)
        if len(encoded) < OFFLOAD_BYTES:
            return encoded.decode(), JSON_TYPE
        name = _segment(f"trigger/{uuid.uuid4().hex}/payload.json")
        answer = (await self._call("PUT", f"/api/v2/packets/{name}", repeatable=True)).json()
        await self._call("PUT", answer["presignedUrl"], encoded, repeatable=True)
        return answer["storagePath"], PACKET_TYPE

    async def trigger(self, task_id: str, payload: Any, options: TriggerOptions) -> RunHandle:
        data, data_type = await self._payload(payload)
        body = _json({"payload": data, "options": _trigger_options(options, data_type)})
        headers = {REQUEST_KEY_HEADER: uuid.uuid4().hex}  # the same on every try: one run however many
        response = await self._call(
            "POST", f"/api/v1/tasks/{_segment(task_id)}/trigger", body, repeatable=True, headers=headers
        )
        answer = response.json()
        return self._handle(answer["id"], task_id, answer["isCached"])

    async def batch_trigger(self, task_id: str, items: list[tuple[Any, TriggerOptions]]) -> BatchHandle:
        announce = _json({"runCount": len(items), "taskIdentifiers": [task_id]})
        batch_id = (await self._call("POST", "/api/v3/batches", announce, repeatable=False)).json()["id"]
        lines = []
        for index, (payload, options) in enumerate(items):
            data, data_type = await self._payload(payload)
            lines.append(
                {"index": index, "task": task_id, "payload": data, "options": _trigger_options(options, data_type)}
            )
        # Every item in one request: all are triggered or none, and it may be repeated (deduplicated by index).
        response = await self._call(
            "POST",
            f"/api/v3/batches/{_segment(batch_id)}/items",
            b"\n".join(_json(line) for line in lines),
            repeatable=True,
            headers={"content-type": "application/x-ndjson"},
        )
        runs = []
        for item in response.json()["runs"]:
            if item["id"] is None:
                raise ConflictError(f"batch {batch_id}: item {item['index']} is being triggered by another request")
            runs.append(self._handle(item["id"], task_id, item["isCached"]))
        return BatchHandle(batch_id, runs, create_public_token(self._secret_key, [f"read:batch:{batch_id}"], "1h"))

    async def retrieve(self, run_id: str) -> Run:
        body = (await self._call("GET", f"/api/v3/runs/{_segment(run_id)}", repeatable=True)).json()
        return await self._resolved(body)

    async def _resolved(self, body: dict[str, Any]) -> Run:
        """A retrieve answer as a run, the packets its presigned URLs point at read as its payload and output."""
        run = run_from_retrieve(body)
        values = {}
        for field in ("payload", "output"):
            url = body.get(f"{field}PresignedUrl")
            if url:
                response = await self._call("GET", url, repeatable=True)
                values[field] = decode_data(response.content, response.headers.get("content-type"))
        return replace(run, **values)

    async def cancel(self, run_id: str) -> Run:
        await self._call("POST", f"/api/v2/runs/{_segment(run_id)}/cancel", repeatable=True)
        return await self.retrieve(run_id)

    async def reschedule(self, run_id: str, delay: Moment) -> Run:
        # Not repeated once sent: a retry after the run started would be refused.
        body = _json({"delay": _timeout(delay)})
        path = f"/api/v1/runs/{_segment(run_id)}/reschedule"
        return await self._resolved((await self._call("POST", path, body, repeatable=False)).json())

    def _frames(self, subscribe: Frame) -> AsyncGenerator[Frame, None]:
        return subscription_frames(self.url, self._secret_key, subscribe, self.timeout)

    async def follow(self, spec: FeedSpec, stop_when_finished: bool) -> AsyncGenerator[Run, None]:
        seen: dict[str, int] = {}  # run id -> newest version yielded: a resync's snapshot repeats nothing
        async with contextlib.aclosing(self._frames(_subscribe_fields(spec))) as frames:
            async for frame in frames:
                states = frame.get("runs", []) if frame["type"] == "snapshot" else [frame.get("run")]
                for state in states:
                    if not isinstance(state, dict):
                        continue
                    run = Run.from_public(state)
                    if not spec.admits(run, seen):
                        continue
                    seen[run.id] = run.version
                    yield run
                    if stop_when_finished and run.status.is_final:
                        return

    async def read(
        self, run_id: str, key: str, start_index: int, timeout_in_seconds: float | None
    ) -> AsyncGenerator[Any, None]:
        subscribe: Frame = {"feed": "stream", "runId": run_id, "key": key, "startIndex": start_index}
        if timeout_in_seconds is not None:
            subscribe["timeoutInSeconds"] = timeout_in_seconds
        async with contextlib.aclosing(self._frames(subscribe)) as frames:
            async for frame in frames:
                if frame["type"] == "chunk":
                    yield frame["data"]
                elif frame["type"] == "end":
                    if frame.get("reason") in ("finished", "timeout"):
                        return
                    failure = StreamResetError if frame.get("code") == StreamResetError.code else StreamFailedError
                    raise failure(str(frame.get("message")), int(frame["nextIndex"]))

    async def send_input(self, run_id: str, stream_id: str, data: Any, idempotency_key: str | None) -> None:
        # Without a key of the caller's, one per call: a send tried again is stored once.
        headers = {REQUEST_KEY_HEADER: idempotency_key or uuid.uuid4().hex}
        path = f"/realtime/v1/streams/{_segment(run_id)}/input/{_segment(stream_id)}"
        await self._call("POST", path, _json({"data": data}), repeatable=True, headers=headers)

    async def create_token(
        self,
        *,
        timeout: Timeout | None,
        idempotency_key: str | None,
        idempotency_key_ttl: str | int | float | None,
        tags: str | list[str] | None,
    ) -> CreatedToken:
        given = {
            "timeout": None if timeout is None else _timeout(timeout),
            "idempotencyKey": idempotency_key,
            "idempotencyKeyTTL": None if idempotency_key_ttl is None else _duration(idempotency_key_ttl),
            "tags": tags,
        }
        body = _json({name: value for name, value in given.items() if value is not None})
        response = await self._call("POST", "/api/v1/waitpoints/tokens", body, repeatable=idempotency_key is not None)
        answer = response.json()
        token_id = answer["id"]
        return CreatedToken(
            token_id, answer["url"], waitpoint_access_token(self._secret_key, token_id), answer["isCached"]
        )

    async def complete_token(self, token_id: str, data: Any) -> None:
        # The first completion wins, so a repeated one changes nothing.
        path = f"/api/v1/waitpoints/tokens/{_segment(token_id)}/complete"
        await self._call("POST", path, _json({"data": data}), repeatable=True)

    async def retrieve_token(self, token_id: str) -> RetrievedToken:
        answer = (await self._call("GET", f"/api/v1/waitpoints/tokens/{_segment(token_id)}", repeatable=True)).json()
        return RetrievedToken.of(token_from_retrieve(answer), answer["url"])
