"""Run lifecycle: triggering, status transitions and metadata, over any broker.

Every change is a read-modify-write guarded by the run's version (optimistic concurrency), so
concurrent writers — a worker, a cancel from a page, a metadata update — never lose each
other's changes and only legal status transitions are ever stored.

When a run starts: with a `delay`, it is stored DELAYED and parked on a timer of its own (a wait
token that only times out, `timer_at`); the first process whose wait token timer fires it queues the
run (`resume`, a compare-and-set: once). With a `ttl`, a run still QUEUED that long after it became
queueable ends EXPIRED: by its own timer, or by the worker claiming it (`start_execution`, in the
same compare-and-set that would start it). A `debounce`d trigger pushes its key's DELAYED run instead of
creating one, while it may (bridge/runtime/debounce.py).

A run whose queue has a concurrency limit enters its task's queue through its gate (`_queue`,
bridge/runtime/queues.py, docs/queues.md): it holds a slot from then until it ends or parks, and gives it
back (`release_slot`) as it does, which queues the gate's next waiting run in the same atomic step.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bridge.backends.base import Broker
from bridge.backends.channels import CANCEL_CHANNEL
from bridge.clock import Clock
from bridge.config import Limits, Settings
from bridge.durations import Moment, format_duration, moment_ms, parse_duration_seconds
from bridge.errors import (
    BridgeError,
    ConflictError,
    NotFoundError,
    PayloadTooLargeError,
    RunFinishedError,
    ValidationError,
)
from bridge.metrics import NEW_RUN, Metrics
from bridge.models import JSON_TYPE, Run, RunError, RunStatus, can_transition, encode_value, new_id, now_ms
from bridge.runtime.debounce import Debounce, parse_debounce
from bridge.runtime.journal import Fenced
from bridge.runtime.max_duration import check_max_duration
from bridge.runtime.packets import PacketRef, Packets
from bridge.runtime.queues import check_options as check_queue_options
from bridge.runtime.queues import gate_of, parse_queue, score_of
from bridge.runtime.retries import check_max_attempts
from bridge.tracing import current_traceparent, span

log = logging.getLogger(__name__)
DEFAULT_IDEMPOTENCY_TTL = "30d"
REQUEST_KEY_TTL_SECONDS = 24 * 3600.0
MAX_IDEMPOTENCY_KEY_LENGTH = 2048  # a run's, a request's and a wait token's idempotency key alike


@dataclass
class TriggerOptions:
    tags: list[str] = field(default_factory=list)
    idempotency_key: str | None = None
    idempotency_key_ttl: str | int | float | None = None
    metadata: dict[str, Any] | None = None
    is_test: bool = False
    request_key: str | None = None  # the official clients' per-call retry key: a retried trigger is not doubled
    max_attempts: int | None = None  # overrides the task's retry policy for this run
    child_of: ChildOf | None = None  # set by `trigger_and_wait` in a task (bridge/runtime/children.py)
    delay: Moment | None = None  # a duration or a date: the run is DELAYED until then
    ttl: str | int | float | timedelta | None = None  # a run not started this long after it is queued expires
    debounce: Mapping[str, Any] | None = None  # {"key", "delay", "mode", "max_delay"}: bridge/runtime/debounce.py
    queue: str | Mapping[str, Any] | None = None  # a name, or {"name", "concurrency_limit"}: bridge/runtime/queues.py
    concurrency_key: str | None = None  # one gate per value of the key, with the queue's limit
    priority: float | None = None  # seconds: ordered as if queued that much earlier among runs waiting for a slot
    max_duration: float | None = None  # seconds of compute time: bridge/runtime/max_duration.py


@dataclass(frozen=True)
class ChildOf:
    """A child run's link to the run waiting for it."""

    parent_run_id: str
    root_run_id: str
    depth: int
    resumes: str  # the parent's wait token, completed once this run (and the rest of its batch) finished
    key: str  # derived from the parent's run id and step position: a replayed parent gets the same child


def encoded_size(value: Any) -> int:
    """The value's size as JSON; ValidationError if it is not JSON or nests deeper than MAX_JSON_DEPTH levels."""
    return len(encode_value(value))


def check_size(what: str, value: Any, limit: int) -> None:
    size = encoded_size(value)
    if size > limit:
        raise PayloadTooLargeError(f"{what} is {size} bytes encoded; the limit is {limit}")


def validate_tags(tags: Any, limits: Limits, owner: str = "a run") -> list[str]:
    """Tags as stored: a string or a list of strings, each counted once, within the limits."""
    if tags is None:
        return []
    if isinstance(tags, str):
        tags = [tags]
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValidationError("tags must be a string or a list of strings")
    unique: list[str] = list(dict.fromkeys(tags))  # a repeated tag counts once
    if len(unique) > limits.max_tags_per_run:
        raise ValidationError(f"{owner} has at most {limits.max_tags_per_run} tags")
    for tag in unique:
        if not tag or len(tag) > limits.max_tag_length or any(ord(c) < 32 for c in tag):
            raise ValidationError(
                f"invalid tag {tag[:40]!r}: 1 to {limits.max_tag_length} characters, no control characters"
            )
    return unique


def delay_until(delay: Moment | None, now: int, limit_seconds: float) -> int | None:
    """When a run triggered with `delay` starts (ms); None without one, or for a moment already passed."""
    if delay is None:
        return None
    until = moment_ms(delay, now, "delay")
    if until - now > limit_seconds * 1000:
        raise ValidationError(
            f"a delay is at most {format_duration(limit_seconds)} (BRIDGE_RETENTION, at most 365 days)"
        )
    return until if until > now else None


def parse_ttl(ttl: object, limit_seconds: float) -> tuple[str, float] | None:
    """(the TTL as the official API shows it, its seconds); None without one or for 0, as the official API."""
    if ttl is None:
        return None
    if isinstance(ttl, bool) or not isinstance(ttl, (str, int, float, timedelta)):
        raise ValidationError('ttl is a duration like "10m", or seconds')
    seconds = parse_duration_seconds(ttl)
    if seconds > limit_seconds:
        raise ValidationError(f"a ttl is at most {format_duration(limit_seconds)} (BRIDGE_RETENTION, at most 365 days)")
    return (ttl.strip() if isinstance(ttl, str) else format_duration(seconds), seconds) if seconds else None


def _expired(run: Run, now: int) -> bool:
    return run.status is RunStatus.QUEUED and run.expires_at is not None and now >= run.expires_at


def _expire(run: Run, now: int) -> None:
    run.status = RunStatus.EXPIRED
    run.finished_at = run.expired_at = now
    run.error = RunError(f"Run expired because the TTL ({run.ttl}) was reached", "TTLExpired")


async def _no_timer(deadline_ms: int) -> str:
    raise BridgeError("this engine has no wait token timer: delays and TTLs need a Bridge")


class AttemptsExhaustedError(BridgeError):
    """A run's execution was lost (its worker died) on its last attempt."""


class _Parked(Exception):
    pass


class _NotParked(Exception):
    pass


class RunEngine:
    def __init__(self, broker: Broker, settings: Settings, metrics: Metrics, clock: Clock | None = None) -> None:
        # Delays and TTLs are deadlines: measured on the bridge's clock, as wait tokens' are (bridge/clock.py).
        self.clock = clock or Clock()
        self.broker = broker
        self.settings = settings
        self.limits = settings.limits
        # Called with each run stored in a final status (bridge/runtime/children.py resumes parents with it).
        self.final_listeners: list[Callable[[Run], Awaitable[None]]] = []
        self.metrics = metrics
        self.packets = Packets(broker, settings)
        # A wait token that only times out, at the given ms: set by the Bridge, whose wait tokens resume runs
        # through this engine (`resume_waiting_runs`).
        self.timer_at: Callable[[int], Awaitable[str]] = _no_timer

    @property
    def longest_wait(self) -> float:
        """The longest delay or TTL, in seconds: a waiting run is not written, and a run is kept only the
        retention after its last change."""
        return min(self.limits.max_wait_token_timeout_seconds, self.settings.retention_seconds)

    # validation
    def check_size(self, what: str, value: Any) -> None:
        check_size(what, value, self.limits.max_payload_bytes)

    def check_tags(self, tags: Any) -> list[str]:
        return validate_tags(tags, self.limits)

    def check_item(self, payload: Any, options: TriggerOptions) -> tuple[dict[str, Any], list[str]]:
        """Everything a trigger validates before storing: returns the metadata and the tags to store."""
        if not isinstance(payload, PacketRef):  # an uploaded packet's size was checked by its upload
            self.packets.encode("payload", payload)
        delay_until(options.delay, self.clock.now_ms(), self.longest_wait)
        parse_ttl(options.ttl, self.longest_wait)
        if parse_debounce(options.debounce, self.longest_wait) is not None:
            for what, given in (("delay", options.delay), ("idempotencyKey", options.idempotency_key)):
                if given is not None:  # a debounced run's start and identity come from its key
                    raise ValidationError(f"debounce cannot be combined with {what}")
            if options.child_of is not None:
                raise ValidationError("debounce cannot be used for a child run (trigger_and_wait)")
        check_queue_options(options.queue, options.concurrency_key, options.priority)
        check_max_duration(options.max_duration, "max_duration")
        if options.metadata is not None and not isinstance(options.metadata, dict):
            raise ValidationError("metadata must be an object")
        metadata = options.metadata or {}
        self.check_size("metadata", metadata)
        if options.max_attempts is not None:
            check_max_attempts(options.max_attempts, self.limits.max_attempts)
        for what, key in (
            ("idempotencyKey", options.idempotency_key),
            ("the request's idempotency key", options.request_key),
        ):
            # Both are stored (as the run's field and in its dedup scope) for as long as the key lives.
            if key is not None and (not isinstance(key, str) or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH):
                raise ValidationError(f"{what} is a string of at most {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
        parse_duration_seconds(options.idempotency_key_ttl or DEFAULT_IDEMPOTENCY_TTL)
        return metadata, self.check_tags(options.tags)

    async def check_trigger(
        self, task_id: str, payload: Any, options: TriggerOptions
    ) -> tuple[dict[str, Any], list[str]]:
        """Everything `trigger` refuses, so callers can refuse it before they consume something (a one-time
        token, a batch index); returns the metadata and the tags to store."""
        if not await self.broker.task_exists(task_id):
            raise NotFoundError(f"Task not found: no worker has registered a task with id {task_id!r}")
        return self.check_item(payload, options)

    # triggering
    async def trigger(
        self, task_id: str, payload: Any, options: TriggerOptions, batch_id: str | None = None
    ) -> tuple[Run, bool]:
        """Stores and enqueues a run (a delayed one: parks it on its timer); returns (run, created). An
        idempotency key returns the existing run."""
        with span("bridge.trigger", {"bridge.task": task_id}):
            return await self._trigger(task_id, payload, options, batch_id)

    async def _trigger(
        self, task_id: str, payload: Any, options: TriggerOptions, batch_id: str | None
    ) -> tuple[Run, bool]:
        metadata, tags = await self.check_trigger(task_id, payload, options)
        debounce = parse_debounce(options.debounce, self.longest_wait)
        if debounce is not None:
            return await self._debounced(task_id, payload, options, debounce, metadata, tags, batch_id)
        now = self.clock.now_ms()
        until = delay_until(options.delay, now, self.longest_wait)
        run = await self._new_run(task_id, payload, options, metadata, tags, batch_id, now, until)
        child_of = options.child_of
        if options.idempotency_key:
            scope: str | None = f"key:{task_id}:{options.idempotency_key}"
            key_ttl = parse_duration_seconds(options.idempotency_key_ttl or DEFAULT_IDEMPOTENCY_TTL)
        elif options.request_key:
            scope, key_ttl = f"request:{options.request_key}", REQUEST_KEY_TTL_SECONDS
        elif child_of is not None:
            scope, key_ttl = f"child:{child_of.key}", self.settings.retention_seconds
        else:
            scope, key_ttl = None, 0.0
        return await self._insert(run, scope, key_ttl)

    async def _new_run(
        self,
        task_id: str,
        payload: Any,
        options: TriggerOptions,
        metadata: dict[str, Any],
        tags: list[str],
        batch_id: str | None,
        now: int,
        until: int | None,
    ) -> Run:
        """A run to insert, its payload stored and, when delayed, its timer set."""
        ttl = parse_ttl(options.ttl, self.longest_wait)
        queue_name, queue_limit = parse_queue(options.queue, "queue", "concurrency_limit")
        queue = await self.broker.declared_queue(task_id, queue_name)
        run = Run(
            id=new_id("run_"),
            task_identifier=task_id,
            status=RunStatus.DELAYED if until else RunStatus.QUEUED,
            metadata=metadata,
            tags=tags,
            created_at=now,
            idempotency_key=options.idempotency_key,
            batch_id=batch_id,
            is_test=options.is_test,
            max_attempts=options.max_attempts,
            trace_context=current_traceparent(),  # its executions' spans are children of this one
            delay_until=until,
            queued_at=None if until else now,
            ttl=ttl[0] if ttl else None,
            expires_at=now + int(ttl[1] * 1000) if ttl and not until else None,
            queue=queue.name,
            concurrency_key=options.concurrency_key,
            concurrency_limit=queue_limit or queue.concurrency_limit,
            priority=float(options.priority or 0),
            max_duration=options.max_duration,
        )
        child_of = options.child_of
        if child_of is not None:
            run.parent_task_run_id, run.root_task_run_id = child_of.parent_run_id, child_of.root_run_id
            run.depth, run.resumes = child_of.depth, child_of.resumes
        extra = (until - now) / 1000 if until else 0.0
        run.payload, run.payload_packet = await self._stored_payload(run.id, payload, extra, "payload.json")
        if until:
            run.waiting_on = await self.timer_at(until)  # `resume` queues the run once it fires
        return run

    async def _insert(self, run: Run, scope: str | None, key_ttl: float) -> tuple[Run, bool]:
        """Stores a new run unless `scope` is taken (that run and False), and queues or parks it."""
        stored, created = await self.broker.insert_run(run, scope, min(key_ttl, self.settings.retention_seconds))
        if created:
            self.metrics.run_transition(NEW_RUN, stored.status)
        if created and stored.waiting_on:
            await self._watch(stored.id, stored.waiting_on)
        elif created:
            await self._queue(stored)
            await self._arm_ttl(stored)
        return stored, created

    async def _stored_payload(
        self, run_id: str, payload: Any, extra_seconds: float, name: str
    ) -> tuple[Any, str | None]:
        """(the payload to keep in the run, or None and its packet's path when big); an uploaded packet kept as
        long as the run needs it."""
        if isinstance(payload, PacketRef):
            try:
                await self.packets.get(payload.path, extra_seconds)
            except NotFoundError as exc:
                raise ValidationError(f"{exc.message}: upload it first (PUT /api/v2/packets/<name>)") from exc
            return None, payload.path
        encoded = self.packets.encode("payload", payload)
        if not self.packets.is_big(encoded):
            return payload, None
        path = f"{run_id}/{name}"
        await self.packets.put(path, encoded, JSON_TYPE, extra_seconds)
        return None, path

    async def _debounced(
        self,
        task_id: str,
        payload: Any,
        options: TriggerOptions,
        debounce: Debounce,
        metadata: dict[str, Any],
        tags: list[str],
        batch_id: str | None,
    ) -> tuple[Run, bool]:
        """Pushes the key's DELAYED run, or creates the key's next one (bridge/runtime/debounce.py: the race)."""
        hint = f"debounce:{task_id}:{debounce.key}"
        previous = await self.broker.get_value(hint)
        for _ in range(self.limits.update_retries):
            now = self.clock.now_ms()
            if previous is not None:
                pushed = await self._push(previous.decode(), now, debounce, payload, options, metadata)
                if pushed is not None:
                    return pushed, False
            latest = now + (debounce.max_delay_ms or int(self.longest_wait * 1000))
            run = await self._new_run(
                task_id, payload, options, metadata, tags, batch_id, now, min(now + debounce.delay_ms, latest)
            )
            run.debounce_until = latest
            after = previous.decode() if previous else ""
            stored, created = await self._insert(run, f"{hint}:after:{after}", self.settings.retention_seconds)
            if created:
                await self.broker.put_value(hint, stored.id.encode(), self.settings.retention_seconds)
                return stored, True
            previous = stored.id.encode()  # a concurrent trigger created it: push that one
        raise ConflictError(f"debounce key {debounce.key!r} changed concurrently {self.limits.update_retries} times")

    async def _push(
        self, run_id: str, now: int, debounce: Debounce, payload: Any, options: TriggerOptions, metadata: dict[str, Any]
    ) -> Run | None:
        """Moves a debounced run's start to `delay` from now (trailing: takes this trigger's payload, metadata
        and maxAttempts); None when it is no longer DELAYED or that would pass its `max_delay`."""
        until = now + debounce.delay_ms
        trailing = debounce.mode == "trailing"
        extra = debounce.delay_ms / 1000
        # Its own path: a concurrent trailing trigger's packet is never overwritten under a run reading it.
        value, packet = (
            await self._stored_payload(run_id, payload, extra, f"{new_id('payload_')}.json")
            if trailing
            else (None, None)
        )
        timer = await self.timer_at(until)

        def mutate(run: Run) -> None:
            if run.status is not RunStatus.DELAYED or run.debounce_until is None or until > run.debounce_until:
                raise _NotParked()
            if until > (run.delay_until or 0):  # a concurrent later trigger may have pushed it further already
                run.delay_until, run.waiting_on = until, timer
            if trailing:
                run.payload, run.payload_packet = value, packet
                run.metadata, run.max_attempts = metadata, options.max_attempts

        try:
            run = await self.update(run_id, mutate)
        except (_NotParked, NotFoundError):
            return None
        if run.payload_packet and not trailing:  # kept until the run can read it
            await self.packets.get(run.payload_packet, extra)
        if run.waiting_on == timer:
            await self._watch(run_id, timer)
        return run

    async def _queue(self, run: Run) -> None:
        """Queues the run for a worker, through its gate when its queue has a concurrency limit (it may then
        wait for a slot: the release of one queues it)."""
        gate = gate_of(run)
        if gate is None:
            await self.broker.enqueue(run.task_identifier, run.id)
        else:
            await self.broker.admit(gate, run.task_identifier, run.id, score_of(run))

    async def release_slot(self, run: Run) -> None:
        """Gives back the run's slot (or its place in line) of its gate; idempotent, so a worker handed a
        delivery of a finished run calls it too: the process that ended the run may have died first."""
        gate = gate_of(run)
        if gate is not None:
            await self.broker.release(gate, run.task_identifier, run.id)

    async def _watch(self, run_id: str, timer: str) -> None:
        """Makes the run the waiter of its timer; a timer that fired before it had a waiter is acted on here."""
        await self.broker.add_waitpoint_waiter(timer, run_id)
        stored = await self.broker.get_waitpoint(timer)
        if stored is None or stored[1] is not None:
            await self.resume(run_id, timer)

    async def _arm_ttl(self, run: Run) -> None:
        if run.expires_at is not None:
            await self._watch(run.id, await self.timer_at(run.expires_at))

    async def reschedule(self, run_id: str, delay: Moment) -> Run:
        """Moves a DELAYED run's start to `delay` (a moment already passed: now); ValidationError for a run
        that is not DELAYED, as the official API."""
        now = self.clock.now_ms()
        until = delay_until(delay, now, self.longest_wait) or now
        timer = await self.timer_at(until)  # the previous one finds the run no longer parked on it

        def mutate(run: Run) -> None:
            if run.status is not RunStatus.DELAYED:
                raise ValidationError(f"Cannot reschedule a run that is not delayed (run {run_id} is {run.status})")
            run.delay_until = until
            run.waiting_on = timer

        run = await self.update(run_id, mutate)
        if run.payload_packet:  # kept until the run can read it
            await self.packets.get(run.payload_packet, (until - now) / 1000)
        await self._watch(run_id, timer)
        return run

    async def batch_trigger(
        self, items: list[tuple[str, Any, TriggerOptions]], batch_id: str | None = None
    ) -> tuple[str, list[tuple[Run, bool]]]:
        if not items:
            raise ValidationError("a batch needs at least one item")
        if len(items) > self.limits.max_batch_items:
            raise ValidationError(f"a batch has at most {self.limits.max_batch_items} items")
        for task_id, payload, options in items:  # validate all before storing any
            if not await self.broker.task_exists(task_id):
                raise NotFoundError(f"Task not found: {task_id!r}")
            self.check_item(payload, options)
        batch_id = batch_id or new_id("batch_")
        results = [await self.trigger(task_id, payload, options, batch_id) for task_id, payload, options in items]
        return batch_id, results

    # reading
    async def retrieve(self, run_id: str) -> Run:
        run = await self.broker.get_run(run_id)
        if run is None:
            raise NotFoundError(f"Run not found: {run_id}")
        return run

    # changing
    async def update(self, run_id: str, mutate: Callable[[Run], None]) -> Run:
        """Applies `mutate` to the newest stored state until it is stored without a concurrent change."""
        for _ in range(self.limits.update_retries):
            run = await self.retrieve(run_id)  # a fresh decode: mutating it touches nothing shared
            stored_version, stored_status = run.version, run.status
            mutate(run)
            run.version = stored_version + 1
            run.updated_at = max(now_ms(), run.updated_at)
            if await self.broker.replace_run(run, stored_version):
                if run.status is not stored_status:
                    self.metrics.run_transition(stored_status, run.status)
                return run
        raise ConflictError(f"run {run_id} changed concurrently {self.limits.update_retries} times; update not applied")

    async def transition(
        self,
        run_id: str,
        target: RunStatus,
        apply: Callable[[Run], None] | None = None,
        execution: int | None = None,
    ) -> Run:
        """Moves the run to `target`; with `execution`, only while that execution is the run's newest."""

        def mutate(run: Run) -> None:
            self._check_execution(run, execution)
            if not can_transition(run.status, target):
                if run.status.is_final:
                    raise RunFinishedError(f"run {run_id} is already {run.status.value}")
                raise BridgeError(f"run {run_id} cannot go from {run.status.value} to {target.value}")
            run.status = target
            if target is RunStatus.EXECUTING and run.started_at is None:
                run.started_at = now_ms()
            if target.is_final:
                run.finished_at = now_ms()
            if apply:
                apply(run)

        run = await self.update(run_id, mutate)
        if target.is_final:
            await self._finished(run)
        return run

    async def _finished(self, run: Run) -> None:
        # The final status is stored whatever a listener does: its failure is logged, not the caller's.
        try:
            await self.release_slot(run)
        except BridgeError as exc:  # the gate keeps the slot: see docs/queues.md
            log.error("run %s: could not release its concurrency slot: %s", run.id, exc.message)
        for listener in self.final_listeners:
            try:
                await listener(run)
            except Exception:
                log.exception("run %s: could not pass on its end", run.id)

    async def start(self, run_id: str) -> Run:
        return await self.transition(run_id, RunStatus.EXECUTING)

    # durable execution (docs/durability.md)
    async def start_execution(self, run_id: str, max_attempts: int) -> Run | None:
        """Starts a new execution of a claimed run: its first attempt (QUEUED), the next one (EXECUTING: the
        previous execution failed with a retry due, or its worker was lost), or the same attempt resumed
        (WAITING). None when the run is finished or parked (a stale delivery), or past its TTL: it ends
        EXPIRED instead, in the same write. AttemptsExhaustedError when a lost execution was the last attempt."""

        def mutate(run: Run) -> None:
            if run.status.is_final:
                raise RunFinishedError(f"run {run_id} is already {run.status.value}")
            if run.waiting_on is not None:
                raise _Parked()
            now = self.clock.now_ms()
            if _expired(run, now):
                _expire(run, now)
            elif run.status is RunStatus.QUEUED:
                run.attempt_number = 1
            elif run.status is RunStatus.EXECUTING:
                if run.attempt_number >= (run.max_attempts or max_attempts):
                    raise AttemptsExhaustedError(f"run {run_id} used its {run.attempt_number} attempt(s)")
                run.attempt_number += 1
            if not run.status.is_final:
                run.status = RunStatus.EXECUTING
                run.started_at = run.started_at or now
                run.executions += 1

        try:
            run = await self.update(run_id, mutate)
        except (_Parked, RunFinishedError):
            return None
        if run.status is RunStatus.EXPIRED:
            await self._finished(run)  # a waiting parent hears of it as of any final status
            return None
        await self.broker.begin_attempt(run_id, run.executions)  # fences off any older execution
        return run

    async def park(self, run_id: str, execution: int, token_id: str, input_stream: str | None = None) -> None:
        """Leaves the run to resume once `token_id` is done, with no process holding it: the token's
        completion (or timeout, or for `input_stream` the stream's next value) queues it again. A parked run
        holds no concurrency slot: it gives it back first (else a resume racing the park would find it
        still held, and the release would then take it from the resumed run), and takes one again on resume."""
        await self.release_slot(await self.retrieve(run_id))

        def mutate(run: Run) -> None:
            self._check_execution(run, execution)
            if run.status.is_final:
                raise RunFinishedError(f"run {run_id} is already {run.status.value}")
            run.waiting_on = token_id
            run.waiting_input = input_stream

        await self.update(run_id, mutate)
        await self.broker.add_waitpoint_waiter(token_id, run_id)

    async def resume(self, run_id: str, token_id: str) -> bool:
        """Queues a run parked on `token_id` (in a wait, or DELAYED: it becomes QUEUED), or expires a QUEUED
        run past its TTL; False (and nothing done) otherwise, so however many completers race, this happens
        once."""

        def mutate(run: Run) -> None:
            now = self.clock.now_ms()
            if _expired(run, now):
                _expire(run, now)
                return
            if run.waiting_on != token_id or run.status.is_final:
                raise _NotParked()
            if run.status is RunStatus.DELAYED:
                run.status = RunStatus.QUEUED
                run.queued_at = now
                run.expires_at = now + int(parse_duration_seconds(run.ttl) * 1000) if run.ttl else None
            run.waiting_on = None
            run.waiting_input = None

        try:
            run = await self.update(run_id, mutate)
        except (_NotParked, NotFoundError):
            return False
        if run.status is RunStatus.EXPIRED:
            await self._finished(run)
            return True
        await self._queue(run)
        if run.status is RunStatus.QUEUED:  # its delay passed: its TTL starts now
            await self._arm_ttl(run)
        return True

    async def resume_waiting_runs(self, token_id: str) -> None:
        for run_id in await self.broker.waitpoint_waiters(token_id):
            await self.resume(run_id, token_id)

    async def hand_back(self, run_id: str, execution: int) -> None:
        """Queues an executing run again for another worker to resume (this one is stopping): the same
        attempt goes on, by replay; the run shows WAITING until it is claimed."""

        def mutate(run: Run) -> None:
            self._check_execution(run, execution)
            if run.status.is_final:
                raise RunFinishedError(f"run {run_id} is already {run.status.value}")
            run.status = RunStatus.WAITING

        run = await self.update(run_id, mutate)
        await self.broker.enqueue(run.task_identifier, run.id)  # it keeps its concurrency slot

    @staticmethod
    def _check_execution(run: Run, execution: int | None) -> None:
        if execution is not None and run.executions != execution:
            raise Fenced()

    async def complete(self, run_id: str, output: Any, execution: int | None = None) -> Run:
        try:
            encoded = self.packets.encode("output", output)
        except BridgeError as exc:
            return await self.fail(run_id, RunError(message=exc.message, name=type(exc).__name__), execution=execution)
        packet = None
        if self.packets.is_big(encoded):
            packet = f"{run_id}/{new_id('output_')}.json"  # its own path: a fenced-off execution replaces nothing
            await self.packets.put(packet, encoded, JSON_TYPE)

        def set_output(run: Run) -> None:
            if packet:
                run.output_packet = packet
            else:
                run.output = output

        return await self.transition(run_id, RunStatus.COMPLETED, set_output, execution)

    async def fail(
        self, run_id: str, error: RunError, status: RunStatus = RunStatus.FAILED, execution: int | None = None
    ) -> Run:
        def set_error(run: Run) -> None:
            run.error = error

        return await self.transition(run_id, status, set_error, execution)

    async def cancel(self, run_id: str) -> Run:
        """Cancels a run that has not finished (a finished run is returned as it is) and tells its worker."""
        try:
            run = await self.transition(run_id, RunStatus.CANCELED)
        except RunFinishedError:
            return await self.retrieve(run_id)
        await self.broker.publish(CANCEL_CHANNEL, run_id.encode())
        return run

    async def add_stream_key(self, run_id: str, key: str) -> None:
        """Lists an output stream on the run (its `realtimeStreams`), once."""

        def mutate(run: Run) -> None:
            if key in run.realtime_streams:
                return
            if len(run.realtime_streams) >= self.limits.max_streams_per_run:
                raise ValidationError(f"a run has at most {self.limits.max_streams_per_run} output streams")
            run.realtime_streams = [*run.realtime_streams, key]

        run = await self.retrieve(run_id)
        if key not in run.realtime_streams:
            await self.update(run_id, mutate)

    async def update_metadata(
        self, run_id: str, change: Callable[[dict[str, Any]], None], sequence: int | None = None
    ) -> dict[str, Any]:
        """Applies `change` to the run's metadata. `sequence` numbers a task's changes from the top of its
        function; the run remembers how many were applied, so a replay can skip those (`DurableRun`)."""

        def mutate(run: Run) -> None:
            if run.status.is_final:
                raise RunFinishedError(f"run {run_id} is already {run.status.value}; metadata is frozen")
            if sequence is not None:
                run.metadata_ops = max(run.metadata_ops, sequence + 1)
            change(run.metadata)
            self.check_size("metadata", run.metadata)

        return (await self.update(run_id, mutate)).metadata
