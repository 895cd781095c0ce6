"""The worker: claims queued runs, executes their task functions, records the outcome.

Hand-off is at-least-once: a delivery is acknowledged once its run reached a final status, parked, or
was handed back. While a run executes, the worker heartbeats its deliveries; deliveries of a worker that
stopped heartbeating for a lease are reclaimed by another worker, which resumes the run from its
journal as its next attempt (docs/durability.md), or ends it CRASHED when that was its last attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import traceback
from collections.abc import AsyncIterator, Awaitable

from bridge.aio import cancel_and_wait
from bridge.backends.base import Delivery
from bridge.backends.channels import CANCEL_CHANNEL
from bridge.errors import AbortTaskRunError, BridgeError, NonDeterminismError, RunFinishedError
from bridge.models import Run, RunError, RunStatus, new_id
from bridge.outages import OutageLog
from bridge.runtime.core import Bridge
from bridge.runtime.engine import AttemptsExhaustedError
from bridge.runtime.hub import Message
from bridge.runtime.input_streams import DRAIN_SECONDS, RunInputs
from bridge.runtime.journal import Fenced, Journal, Unwind
from bridge.runtime.max_duration import ERROR_NAME as MAX_DURATION_ERROR
from bridge.runtime.max_duration import MaxDurationExceededError, within
from bridge.runtime.output_streams import RunStreams
from bridge.runtime.queues import release_lost_slots
from bridge.runtime.retries import RetryPolicy
from bridge.tracing import Attributes, span
from bridge.worker.context import RunScope, entered
from bridge.worker.durable import DurableRun
from bridge.worker.registry import RunContext, TaskDefinition, TaskRegistry

log = logging.getLogger(__name__)

CLAIM_TIMEOUT_SECONDS = 1.0
CLAIM_RETRY_SECONDS = 1.0  # pause before claiming again after the backend was unavailable


class Worker:
    def __init__(self, bridge: Bridge, registry: TaskRegistry, concurrency: int | None = None) -> None:
        self.bridge = bridge
        self.registry = registry
        self.id = new_id("worker_")
        self.concurrency = concurrency or bridge.settings.worker_concurrency
        self._slots = asyncio.Semaphore(self.concurrency)
        self._running: dict[str, tuple[Delivery, asyncio.Task[None]]] = {}  # run id -> delivery, execution
        self._loops: list[asyncio.Task[None]] = []
        self._checks: set[asyncio.Task[None]] = set()
        self._waiting: set[str] = set()  # runs suspended in `wait()`: they hold no slot
        self._stopping = asyncio.Event()  # set by `stop`: waits park at once, new steps hand the run back
        self._outage = OutageLog(log, f"worker {self.id}")  # claims and heartbeats: one outage, logged once

    async def start(self) -> None:
        await self.bridge.broker.register_tasks(self.registry.ids)
        await self.bridge.broker.set_task_queues(self.registry.queues)
        await self.bridge.hub.attach(CANCEL_CHANNEL, self._on_cancel_message)
        self._loops = [asyncio.create_task(self._claim_forever()), asyncio.create_task(self._heartbeat_forever())]
        self.bridge.metrics.worker_slots.track(self)

    async def stop(self, grace: float | None = None) -> None:
        """Drains (what a deploy's SIGTERM asks): stops claiming, parks waiting runs at once, lets executing
        runs finish or reach their next durable step within `grace` seconds (default: the settings'
        `shutdown_grace_seconds`), then hands the rest back to the queue. Nothing it held ends CRASHED."""
        if self._stopping.is_set():
            return
        claiming, heartbeat = self._loops or (None, None)
        await cancel_and_wait(claiming)
        self._stopping.set()
        executions = [execution for _, execution in self._running.values()]
        if executions:
            await asyncio.wait(
                executions, timeout=self.bridge.settings.shutdown_grace_seconds if grace is None else grace
            )
        for _, execution in list(self._running.values()):
            execution.cancel()  # `_execute` hands its run back
        await asyncio.gather(*(e for _, e in self._running.values()), return_exceptions=True)
        await cancel_and_wait(heartbeat)
        await self.bridge.hub.detach(CANCEL_CHANNEL, self._on_cancel_message)
        self.bridge.metrics.worker_slots.untrack(self)

    @property
    def running_run_ids(self) -> list[str]:
        return list(self._running)

    @property
    def busy_slots(self) -> int:
        """Slots held by executions: every run executing here but those waiting with their slot given back."""
        return len(self._running) - len(self._waiting)

    async def released(self, run_id: str) -> None:
        """Returns once this worker holds no execution of the run (it finished, parked or was handed back)."""
        entry = self._running.get(run_id)
        if entry is not None:
            await asyncio.wait({entry[1]})

    async def _claim_forever(self) -> None:
        task_ids = self.registry.ids
        while True:
            await self._slots.acquire()
            try:
                delivery = await self.bridge.broker.claim(self.id, task_ids, CLAIM_TIMEOUT_SECONDS)
                self._outage.recovered()
            except BridgeError as exc:  # e.g. Redis restarting: keep claiming once it is back
                self._slots.release()
                self._outage.failed(f"claiming: {exc.message}")
                await asyncio.sleep(CLAIM_RETRY_SECONDS)
                continue
            except BaseException:
                self._slots.release()
                raise
            if delivery is None:
                self._slots.release()
                continue
            self._spawn(delivery)

    async def _heartbeat_forever(self) -> None:
        interval = self.bridge.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.bridge.broker.heartbeat(self.id, [d for d, _ in self._running.values()])
                self._outage.recovered()
                if self._stopping.is_set():
                    continue  # draining: heartbeats go on, no new work is taken
                await release_lost_slots(self.bridge.broker)
                for delivery in await self.bridge.broker.reclaim_abandoned(self.id):
                    if delivery.run_id in self._running:
                        # This worker's own delivery, its run still executing here: it only looked abandoned
                        # (this loop stalled for a lease between its heartbeat and this reclaim, e.g. on a
                        # loaded machine). A second execution would find the attempt in progress and, at its
                        # last attempt, end the live run CRASHED while it still writes. Reclaimed by this
                        # worker, it stays pending here, and the next heartbeat keeps it.
                        continue
                    if self._slots.locked():  # waiting for a slot would stop this loop's heartbeats:
                        break  # the rest stays pending, to be reclaimed again after a lease
                    await self._slots.acquire()  # a free slot: returns at once
                    self._spawn(delivery)
            except BridgeError as exc:
                self._outage.failed(f"heartbeat: {exc.message}")

    def _spawn(self, delivery: Delivery) -> None:
        execution = asyncio.create_task(self._execute(delivery))
        self._running[delivery.run_id] = (delivery, execution)
        self._waiting.discard(delivery.run_id)

        def finished(done: asyncio.Task[None]) -> None:
            if not done.cancelled() and (error := done.exception()) is not None:
                # e.g. the run vanished from storage mid-execution: say which run, never "never retrieved"
                log.error("run %s: its execution failed", delivery.run_id, exc_info=error)
            self._running.pop(delivery.run_id, None)
            if delivery.run_id in self._waiting:
                self._waiting.discard(delivery.run_id)  # it gave its slot back while waiting
            else:
                self._slots.release()

        execution.add_done_callback(finished)

    async def _execute(self, delivery: Delivery) -> None:
        engine = self.bridge.engine
        run = await engine.broker.get_run(delivery.run_id)
        if run is None or run.status.is_final or run.waiting_on is not None:
            if run is not None and run.status.is_final:  # e.g. reclaimed from a worker that died as it ended it
                await engine.release_slot(run)
            await self.bridge.broker.ack(delivery)  # finished, or parked: its resume queues it again
            return
        definition = self.registry.get(run.task_identifier)
        if definition is None:
            await self._record(
                engine.fail(run.id, RunError(f"no function for task {run.task_identifier!r}", "TaskNotFound"))
            )
            await self.bridge.broker.ack(delivery)
            return
        policy = self._policy(definition)
        try:
            started = await engine.start_execution(run.id, policy.max_attempts)
        except AttemptsExhaustedError:
            lost = RunError("the worker executing this run stopped", "WorkerLost")
            await self._record(engine.fail(run.id, lost, RunStatus.CRASHED))
            # Should the lost execution still be running (its worker only stalled), its next durable step stops it.
            await self.bridge.broker.begin_attempt(run.id, run.executions + 1)
            await self.bridge.broker.ack(delivery)
            return
        if started is None:
            await self.bridge.broker.ack(delivery)
            return
        acknowledge = True  # also when cancelled: the run was, or it was handed back with a new delivery
        attributes: Attributes = {
            "bridge.task": started.task_identifier,
            "bridge.run_id": started.id,
            "bridge.attempt": started.attempt_number,
            "bridge.execution": started.executions,
        }
        try:
            with span("bridge.run", attributes, parent=started.trace_context):
                acknowledge = await self._run(definition, policy, started)
        finally:
            if acknowledge:
                with contextlib.suppress(BridgeError):
                    await self.bridge.broker.ack(delivery)

    def _policy(self, definition: TaskDefinition) -> RetryPolicy:
        settings = self.bridge.settings
        return RetryPolicy.from_spec(definition.retry, settings.default_max_attempts, settings.limits.max_attempts)

    async def _run(self, definition: TaskDefinition, policy: RetryPolicy, run: Run) -> bool:
        """One execution, from the top of the task function; False when it was fenced off (the delivery
        is another worker's now)."""
        engine = self.bridge.engine
        execution = run.executions
        journal = await Journal.open(
            engine.broker,
            run.id,
            execution,
            self.bridge.settings.limits.max_journal_entries,
            engine.limits.max_payload_bytes,
        )
        context = RunContext(
            run_id=run.id,
            task_id=run.task_identifier,
            tags=tuple(run.tags),
            batch_id=run.batch_id,
            parent_task_run_id=run.parent_task_run_id,
            root_task_run_id=run.root_task_run_id,
        )
        run_streams = RunStreams(engine, run.id, resumed=execution > 1)
        run_inputs = RunInputs(self.bridge.hub, self.bridge.broker, run.id)
        durable = DurableRun(self.bridge, run, journal, run_streams, lambda: self._suspended(run.id), self._stopping)
        scope = RunScope(context, run_streams, run_inputs, durable, self.bridge)
        # Once the run is final, `on` handlers still get the input values accepted before. An execution that
        # leaves the run unfinished (parked, handed back, fenced, retried later) stops reading at once: the
        # next execution reads every value again, and draining would hold this one (a stopping worker too).
        drain = DRAIN_SECONDS
        max_duration = run.max_duration or definition.max_duration
        started = time.monotonic()
        try:
            try:
                with entered(scope):
                    payload = await engine.packets.payload_of(run)
                    remaining = (max_duration or 0) - run.compute_ms / 1000
                    output = await within(max_duration, remaining, definition(payload, context))
            finally:
                # Every appended chunk is stored before the run is final: readers end on "final and drained".
                await run_streams.flush()
        except Fenced:
            drain = 0
            log.warning("run %s: a newer execution started elsewhere; this one stops", run.id)
            return False
        except Unwind:  # parked, or handed back: another execution resumes it
            drain = 0
            await self._add_compute_time(run.id, max_duration, started)
            return True
        except MaxDurationExceededError as exc:
            error = RunError(str(exc), MAX_DURATION_ERROR)
            await self._record(engine.fail(run.id, error, RunStatus.TIMED_OUT, execution))
        except asyncio.CancelledError:
            current = await engine.broker.get_run(run.id)
            if current is not None and not current.status.is_final:  # the worker is stopping, not the run cancelled
                drain = 0
                with contextlib.suppress(BridgeError, Fenced):
                    await engine.hand_back(run.id, execution)
                await self._add_compute_time(run.id, max_duration, started)
            raise
        except (AbortTaskRunError, NonDeterminismError) as exc:
            await self._record(engine.fail(run.id, _run_error(exc), execution=execution))
        except Exception as exc:
            attempts = run.max_attempts or policy.max_attempts
            if run.attempt_number >= attempts:
                await self._record(engine.fail(run.id, _run_error(exc), execution=execution))
                return True
            drain = 0
            await self._add_compute_time(run.id, max_duration, started)
            delay = policy.delay_before(run.attempt_number + 1)
            log.warning(
                "run %s: attempt %d of %d failed (%s: %s); retrying in %.1f s",
                *(run.id, run.attempt_number, attempts, type(exc).__name__, exc, delay),
            )
            return await self._retry_later(durable, delay)
        else:
            await self._record(engine.complete(run.id, output, execution))
        finally:
            await run_inputs.close(drain)
        return True

    async def _retry_later(self, durable: DurableRun, delay: float) -> bool:
        """Parks the run (EXECUTING, no process) on a wait token of its own that times out after `delay`:
        the next attempt then starts on any worker, replaying what this one recorded. False when that could
        not be stored: the delivery then stays unacknowledged, and is reclaimed after the lease as the next
        attempt (instead of a run left EXECUTING with nothing to retry it)."""
        try:
            await durable.retry_after(delay)
        except (Unwind, RunFinishedError):  # parked; or cancelled meanwhile
            return True
        except BridgeError as exc:
            log.warning("run %s: could not schedule its retry (%s); it is retried after the lease", durable.run_id, exc)
            return False

    @contextlib.asynccontextmanager
    async def _suspended(self, run_id: str) -> AsyncIterator[None]:
        """While a task waits (an input stream's `wait`, `wait.for_token`): the run is WAITING and its
        worker slot is free. Past `max_waiting_runs_per_worker` suspended runs, a waiting run keeps its
        slot, so this worker claims no more runs until some wait ends (memory stays bounded)."""
        await self.bridge.engine.transition(run_id, RunStatus.WAITING)
        holds_slot = len(self._waiting) >= self.bridge.settings.limits.max_waiting_runs_per_worker
        if not holds_slot:
            self._waiting.add(run_id)
            self._slots.release()
        try:
            yield
        except (asyncio.CancelledError, Unwind):
            # Cancelled (the run was, or the worker stops) or parked: it ends now and takes no slot back,
            # else it would wait for one while every slot is busy. `finished` knows by _waiting.
            raise
        except BaseException:
            await self._resume(run_id, holds_slot)  # e.g. InputStreamTimeoutError, which the task may catch
            raise
        else:
            await self._resume(run_id, holds_slot)

    @property
    def waiting_run_count(self) -> int:
        """Runs suspended in a wait that gave their slot back."""
        return len(self._waiting)

    async def _resume(self, run_id: str, holds_slot: bool) -> None:
        if not holds_slot:
            await self._slots.acquire()  # cancelled here, it holds no slot: `finished` knows by _waiting
            self._waiting.discard(run_id)
        with contextlib.suppress(RunFinishedError):  # cancelled meanwhile: the cancel wins
            await self.bridge.engine.transition(run_id, RunStatus.EXECUTING)

    async def _add_compute_time(self, run_id: str, max_duration: float | None, started: float) -> None:
        """Adds what an execution that leaves the run unfinished (parked, retried later, handed back) used of
        its maxDuration (monotonic seconds since `started`); lost with its process if that dies first."""
        if max_duration is None:
            return
        used_ms = math.ceil((time.monotonic() - started) * 1000)

        def add(run: Run) -> None:
            run.compute_ms += used_ms

        with contextlib.suppress(BridgeError):
            await self.bridge.engine.update(run_id, add)

    @staticmethod
    async def _record(outcome: Awaitable[object]) -> None:
        """Stores a final status; a run cancelled meanwhile keeps its CANCELED status, and an execution
        fenced off by a newer one stores nothing."""
        with contextlib.suppress(RunFinishedError, Fenced):
            await outcome

    def _on_cancel_message(self, channel: str, message: Message | None) -> None:
        if message is None:  # notifications may have been lost: look at every running run
            check = asyncio.create_task(self._cancel_finished_runs())
            self._checks.add(check)
            check.add_done_callback(self._checks.discard)
            return
        entry = self._running.get(message.raw.decode())
        if entry:
            entry[1].cancel()

    async def _cancel_finished_runs(self) -> None:
        for run_id, (_, execution) in list(self._running.items()):
            run = await self.bridge.broker.get_run(run_id)
            if run is not None and run.status.is_final:
                execution.cancel()


def _run_error(exc: BaseException) -> RunError:
    return RunError(message=str(exc), name=type(exc).__name__, stack_trace=traceback.format_exc())
