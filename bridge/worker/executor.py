"""The worker: claims queued runs, executes their task functions, records the outcome.

Hand-off is at-least-once: a delivery is acknowledged only after its run reached a final
status. While a run executes, the worker heartbeats its deliveries; deliveries of a worker that
stopped heartbeating for a lease are reclaimed by another worker, which runs them if they never
started, or marks them CRASHED if they were executing (a task may have side effects, so it is
not silently re-run).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import traceback
from collections.abc import AsyncIterator, Awaitable

from bridge.backends.base import Delivery
from bridge.backends.channels import CANCEL_CHANNEL
from bridge.errors import BridgeError, RunFinishedError
from bridge.models import RunError, RunStatus, new_id
from bridge.runtime.core import Bridge
from bridge.runtime.hub import Message
from bridge.runtime.input_streams import DRAIN_SECONDS, RunInputs
from bridge.runtime.output_streams import RunStreams
from bridge.worker.context import RunScope, entered
from bridge.worker.registry import RunContext, TaskRegistry

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

    async def start(self) -> None:
        await self.bridge.broker.register_tasks(self.registry.ids)
        await self.bridge.hub.attach(CANCEL_CHANNEL, self._on_cancel_message)
        self._loops = [asyncio.create_task(self._claim_forever()), asyncio.create_task(self._heartbeat_forever())]

    async def stop(self) -> None:
        for loop in self._loops:
            loop.cancel()
        for _, execution in list(self._running.values()):
            execution.cancel()
        await asyncio.gather(*self._loops, *(e for _, e in self._running.values()), return_exceptions=True)
        await self.bridge.hub.detach(CANCEL_CHANNEL, self._on_cancel_message)

    @property
    def running_run_ids(self) -> list[str]:
        return list(self._running)

    async def _claim_forever(self) -> None:
        task_ids = self.registry.ids
        while True:
            await self._slots.acquire()
            try:
                delivery = await self.bridge.broker.claim(self.id, task_ids, CLAIM_TIMEOUT_SECONDS)
            except BridgeError:  # e.g. Redis restarting: keep claiming once it is back
                self._slots.release()
                log.warning("worker %s: backend unavailable for claiming; retrying", self.id)
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
                for delivery in await self.bridge.broker.reclaim_abandoned(self.id):
                    if self._slots.locked():  # waiting for a slot would stop this loop's heartbeats:
                        break  # the rest stays pending, to be reclaimed again after a lease
                    await self._slots.acquire()  # a free slot: returns at once
                    self._spawn(delivery)
            except BridgeError:
                log.warning("worker %s: backend unavailable for heartbeat; retrying", self.id)

    def _spawn(self, delivery: Delivery) -> None:
        execution = asyncio.create_task(self._execute(delivery))
        self._running[delivery.run_id] = (delivery, execution)
        self._waiting.discard(delivery.run_id)

        def finished(_: asyncio.Task[None]) -> None:
            self._running.pop(delivery.run_id, None)
            if delivery.run_id in self._waiting:
                self._waiting.discard(delivery.run_id)  # it gave its slot back while waiting
            else:
                self._slots.release()

        execution.add_done_callback(finished)

    async def _execute(self, delivery: Delivery) -> None:
        engine = self.bridge.engine
        run = await engine.broker.get_run(delivery.run_id)
        if run is None or run.status.is_final:
            await self.bridge.broker.ack(delivery)
            return
        if run.status is not RunStatus.QUEUED:
            # Started by a worker that died: its side effects are unknown, so it is not re-run.
            await self._record(
                engine.fail(run.id, RunError("the worker executing this run stopped", "WorkerLost"), RunStatus.CRASHED)
            )
            await self.bridge.broker.ack(delivery)
            return
        definition = self.registry.get(run.task_identifier)
        if definition is None:
            await self._record(
                engine.fail(run.id, RunError(f"no function for task {run.task_identifier!r}", "TaskNotFound"))
            )
            await self.bridge.broker.ack(delivery)
            return
        try:
            run = await engine.start(run.id)
        except RunFinishedError:
            await self.bridge.broker.ack(delivery)
            return
        context = RunContext(run_id=run.id, task_id=run.task_identifier, tags=tuple(run.tags), batch_id=run.batch_id)
        run_streams = RunStreams(engine, run.id)
        run_inputs = RunInputs(self.bridge.hub, self.bridge.broker, run.id)
        scope = RunScope(context, run_streams, run_inputs, lambda: self._suspended(run.id))
        try:
            try:
                with entered(scope):
                    output = await definition(run.payload, context)
            finally:
                # Every appended chunk is stored before the run is final: readers end on "final and drained".
                await run_streams.flush()
        except asyncio.CancelledError:
            current = await engine.broker.get_run(run.id)
            if current is None or not current.status.is_final:  # the worker is stopping, not the run cancelled
                await self._record(
                    engine.fail(run.id, RunError("the worker shut down", "WorkerShutdown"), RunStatus.CRASHED)
                )
            raise
        except Exception as exc:
            error = RunError(message=str(exc), name=type(exc).__name__, stack_trace=traceback.format_exc())
            await self._record(engine.fail(run.id, error))
        else:
            await self._record(engine.complete(run.id, output))
        finally:
            await run_inputs.close(DRAIN_SECONDS)
            with contextlib.suppress(BridgeError):
                await self.bridge.broker.ack(delivery)

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
        except asyncio.CancelledError:
            # Cancelled (the run was, or the worker stops): it ends now and takes no slot back, else it
            # would wait for one while every slot is busy. `finished` knows by _waiting.
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

    @staticmethod
    async def _record(outcome: Awaitable[object]) -> None:
        """Stores a final status; a run cancelled meanwhile keeps its CANCELED status."""
        with contextlib.suppress(RunFinishedError):
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
