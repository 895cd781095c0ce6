"""Durable runs across real `realtime-bridge worker` processes on Redis (tests/test_durable.py has the
in-process behaviour): a deploy's SIGTERM parks a waiting run at once and the next worker resumes it; a
SIGKILL'd worker's run is taken over after a lease and replayed; parked runs cost a worker no memory and
outlive restarts; a queue's concurrency limit holds across workers (tests/test_queues.py: in one process).
Tasks: tests/support/durable_process_tasks.py, which note what their code did in files.

The test process reaches the same Redis (same key prefix and secret) with a Bridge of its own: it triggers,
completes tokens, sends inputs and follows runs through their feeds.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from bridge.config import Settings
from bridge.models import Run, RunStatus
from bridge.runtime.core import Bridge
from bridge.runtime.engine import TriggerOptions
from bridge.runtime.feeds import FeedCursor, FeedSpec
from bridge.runtime.input_streams import send_input
from bridge.testing.redis_server import RedisServer
from tests.conftest import SECRET_KEY

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tests/support/durable_process_tasks.py"
TASK_IDS = ["proc-child", "proc-gated", "proc-inputs", "proc-parent", "proc-review", "proc-slow-step", "proc-wait"]
STARTUP_SECONDS = 30.0  # a worker process imports everything, then logs that it runs
EXIT_SECONDS = 10.0  # a drained worker exits well before the default 30 s grace
STATE_SECONDS = 20.0  # a run reaches the awaited state
SHORT_LEASE = "1"  # seconds: a SIGKILL'd worker's runs are taken over this soon
SCALE_RUNS = 1000
WARM_UP_RUNS = 200
WAVE_RUNS = 100
_prefixes = itertools.count()


class WorkerProcess:
    """One `realtime-bridge worker` subprocess; its output is copied to `log_path` line by line."""

    def __init__(self, name: str, settings: Settings, log_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_path
        environment = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
        environment |= {"BRIDGE_SECRET_KEY": settings.secret_key, "BRIDGE_KEY_PREFIX": settings.key_prefix, **env}
        # `-m` from the repository root: the `bridge` of this checkout, whichever one a console script would import.
        command = [sys.executable, "-m", "bridge.cli", "worker", "--tasks", str(TASKS)]
        self.process = subprocess.Popen(
            [*command, "--redis-url", str(settings.redis_url)],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._started = False
        self._output_seen = threading.Event()  # the startup line, or the end of the output
        self._copier = threading.Thread(target=self._copy_output, daemon=True)
        self._copier.start()

    def _copy_output(self) -> None:
        assert self.process.stdout is not None
        with self.log_path.open("wb") as log:
            for line in self.process.stdout:
                log.write(line)
                log.flush()
                if b"with concurrency" in line:  # "worker ... running ... with concurrency N": claiming
                    self._started = True
                    self._output_seen.set()
        self._output_seen.set()

    def log(self) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return f"--- worker {self.name} (pid {self.process.pid}, exit {self.process.poll()}) ---\n{text}"

    async def ready(self) -> None:
        """Returns once the worker claims runs."""
        await asyncio.to_thread(self._output_seen.wait, STARTUP_SECONDS)
        assert self._started, f"worker {self.name} did not start\n{self.log()}"

    async def terminate(self) -> float:
        """SIGTERM, as a deploy sends; returns the seconds until the process exited, with status 0."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = await asyncio.to_thread(self.process.wait, EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker {self.name} still runs {EXIT_SECONDS} s after SIGTERM\n{self.log()}"
            ) from None
        elapsed = time.monotonic() - started
        assert code == 0, f"worker {self.name} exited with {code} after SIGTERM\n{self.log()}"
        return elapsed

    async def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        self.process.kill()
        await asyncio.to_thread(self.process.wait, EXIT_SECONDS)

    def rss_kb(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for worker {self.name}")

    def end(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(EXIT_SECONDS)
        self._copier.join(EXIT_SECONDS)


class Workers:
    """The worker processes of one test, on its key prefix; every one is killed when the test ends."""

    def __init__(self, settings: Settings, directory: Path) -> None:
        self.settings = settings
        self.directory = directory
        self.started: list[WorkerProcess] = []

    def start(self, name: str, *, lease: str = "15", hold: str = "2s") -> WorkerProcess:
        env = {"BRIDGE_LEASE_SECONDS": lease, "BRIDGE_WAIT_HOLD": hold}
        worker = WorkerProcess(name, self.settings, self.directory / f"worker-{name}.log", env)
        self.started.append(worker)
        return worker

    def logs(self) -> str:
        return "\n".join(worker.log() for worker in self.started)

    def end_all(self) -> None:
        for worker in self.started:
            worker.end()


@pytest.fixture
async def bridge(redis_server: RedisServer) -> AsyncIterator[Bridge]:
    """The test process's bridge on a fresh key prefix of the session's own Redis."""
    settings = Settings(
        secret_key=SECRET_KEY, redis_url=redis_server.url, key_prefix=f"rbprocs{os.getpid()}x{next(_prefixes)}"
    )
    running = Bridge(settings)
    await running.start()
    try:
        await running.broker.register_tasks(TASK_IDS)  # so runs can be triggered before a worker runs
        yield running
    finally:
        await running.stop()


@pytest.fixture
def workers(bridge: Bridge, tmp_path: Path) -> Iterator[Workers]:
    started = Workers(bridge.settings, tmp_path)
    try:
        yield started
    finally:
        started.end_all()


class Feed:
    """A feed's runs, each in its latest state; `until` awaits a condition on them."""

    def __init__(self, bridge: Bridge, spec: FeedSpec, workers: Workers) -> None:
        self._cursor = FeedCursor(bridge.hub, bridge.broker, spec)
        self._workers = workers
        self.runs: dict[str, Run] = {}

    async def __aenter__(self) -> Feed:
        self._take(await self._cursor.open())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._cursor.close()

    def _take(self, runs: list[Run]) -> None:
        self.runs.update((run.id, run) for run in runs)

    async def until(self, what: str, reached: Callable[[dict[str, Run]], bool], timeout: float = STATE_SECONDS) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not reached(self.runs):
                    self._take(await self._cursor.next_changes(timeout=None))
        except TimeoutError:
            states = sorted({f"{run.status.value} parked={run.waiting_on is not None}" for run in self.runs.values()})
            raise AssertionError(f"not {what} within {timeout} s; states: {states}\n{self._workers.logs()}") from None

    async def run_until(
        self, run_id: str, what: str, reached: Callable[[Run], bool], timeout: float = STATE_SECONDS
    ) -> Run:
        await self.until(what, lambda runs: run_id in runs and reached(runs[run_id]), timeout)
        return self.runs[run_id]


def run_feed(bridge: Bridge, run_id: str, workers: Workers) -> Feed:
    return Feed(bridge, FeedSpec.for_run(run_id), workers)


def is_final(run: Run) -> bool:
    return run.status.is_final


def parked(run: Run) -> bool:
    return run.status is RunStatus.WAITING and run.waiting_on is not None


def is_waiting(run: Run) -> bool:
    return run.status is RunStatus.WAITING


def events(directory: Path) -> list[str]:
    """What the task's code did, in order, across processes (read once the run is final)."""
    return (directory / "events").read_text().splitlines()


async def chunks(bridge: Bridge, run_id: str, key: str) -> list[Any]:
    async with bridge.output_streams.reader(run_id, key, 0, 5) as reader:
        return [chunk.value() async for chunk in reader.chunks()]


async def trigger(bridge: Bridge, task_id: str, payload: Any, tags: list[str] | None = None) -> str:
    run, _ = await bridge.engine.trigger(task_id, payload, TriggerOptions(tags=tags or []))
    return run.id


async def test_sigterm_parks_a_waiting_run_at_once_and_the_next_worker_resumes_it(
    bridge: Bridge, workers: Workers, tmp_path: Path
) -> None:
    """What a deploy does: the old worker gets SIGTERM while a run waits for a token."""
    a = workers.start("a", hold="1h")  # the wait holds the run in A's memory: only the SIGTERM parks it
    run_id = await trigger(bridge, "proc-review", {"dir": str(tmp_path)})
    async with run_feed(bridge, run_id, workers) as feed:
        waiting = await feed.run_until(
            run_id, "waiting on its token", lambda run: run.status is RunStatus.WAITING and "tokenId" in run.metadata
        )
        token_id = waiting.metadata["tokenId"]
        assert waiting.waiting_on is None  # held by A, not parked yet
        elapsed = await a.terminate()
        print(f"\nworker A exited {elapsed:.2f} s after SIGTERM")
        assert elapsed < 10, f"a waiting run parks at once; A took {elapsed:.1f} s of its 30 s grace\n{workers.logs()}"
        stopped = await bridge.engine.retrieve(run_id)
        assert stopped.status is RunStatus.WAITING and stopped.waiting_on == token_id, workers.logs()  # not CRASHED

        workers.start("b")
        await bridge.waitpoints.complete(token_id, {"approved": True})
        final = await feed.run_until(run_id, "final", is_final)
    assert final.status is RunStatus.COMPLETED, f"{final.status} {final.error}\n{workers.logs()}"
    assert final.output == {"effect": {"effect": True}, "result": {"approved": True}}
    assert events(tmp_path) == ["top", "effect", "top", "after"]  # the code before the wait twice, the step once
    assert final.metadata["counter"] == 1  # the replay did not increment again
    assert final.attempt_number == 1  # a drained worker's run is not a failed attempt
    assert await chunks(bridge, run_id, "log") == ["before-1", "before-2", "after"]


async def test_a_worker_sigtermed_as_soon_as_it_runs_drains_and_exits_0(workers: Workers) -> None:
    """A deploy may stop a worker that has just started: from its startup line on, SIGTERM drains it."""
    for attempt in range(10):  # the signal lands within microseconds of the line: a handler set later misses it
        worker = workers.start(f"s{attempt}")
        await worker.ready()
        await worker.terminate()


async def test_a_run_held_in_a_wait_by_a_sigkilled_worker_is_taken_over_after_the_lease(
    bridge: Bridge, workers: Workers, tmp_path: Path
) -> None:
    a = workers.start("a", lease=SHORT_LEASE, hold="1h")  # the run stays in A's memory, not parked
    run_id = await trigger(bridge, "proc-review", {"dir": str(tmp_path)})
    async with run_feed(bridge, run_id, workers) as feed:
        waiting = await feed.run_until(
            run_id, "waiting on its token", lambda run: run.status is RunStatus.WAITING and "tokenId" in run.metadata
        )
        await a.kill()
        assert (await bridge.engine.retrieve(run_id)).waiting_on is None  # nobody parked it

        workers.start("b", lease=SHORT_LEASE)
        await bridge.waitpoints.complete(waiting.metadata["tokenId"], "ok")
        final = await feed.run_until(run_id, "final", is_final)
    assert final.status is RunStatus.COMPLETED, f"{final.status} {final.error}\n{workers.logs()}"
    assert final.output == {"effect": {"effect": True}, "result": "ok"}
    assert events(tmp_path) == ["top", "effect", "top", "after"]  # B replayed: the step's effect stayed once
    assert final.metadata["counter"] == 1
    assert await chunks(bridge, run_id, "log") == ["before-1", "before-2", "after"]


async def test_a_step_interrupted_by_sigkill_runs_again_in_the_next_attempt(
    bridge: Bridge, workers: Workers, tmp_path: Path
) -> None:
    """At least once inside a step: its body was running when its worker died, so it runs again."""
    a = workers.start("a", lease=SHORT_LEASE)
    run_id = await trigger(bridge, "proc-slow-step", {"dir": str(tmp_path)})
    async with run_feed(bridge, run_id, workers) as feed:
        await feed.run_until(run_id, "inside its step", lambda run: run.metadata.get("inStep") is True)
        await a.kill()
        workers.start("b", lease=SHORT_LEASE)
        await send_input(bridge.engine, run_id, "go", True)  # the step's work can finish now
        final = await feed.run_until(run_id, "final", is_final)
    assert final.status is RunStatus.COMPLETED, f"{final.status} {final.error}\n{workers.logs()}"
    assert final.output == {"step": "done"}
    assert events(tmp_path) == ["top", "in-step", "top", "in-step", "effect"]
    assert final.attempt_number == 2  # the lost execution counted as an attempt


async def test_an_input_wait_and_a_timed_wait_outlive_worker_restarts(
    bridge: Bridge, workers: Workers, tmp_path: Path
) -> None:
    a = workers.start("a", hold="1h")
    run_id = await trigger(bridge, "proc-inputs", {"dir": str(tmp_path)})
    async with run_feed(bridge, run_id, workers) as feed:
        await feed.run_until(run_id, "waiting for its input", lambda run: run.status is RunStatus.WAITING)
        await a.terminate()
        stopped = await bridge.engine.retrieve(run_id)
        assert parked(stopped) and stopped.waiting_input == "approval", workers.logs()

        b = workers.start("b", hold="1h")
        await send_input(bridge.engine, run_id, "approval", {"approved": True})
        pausing = await feed.run_until(
            run_id, "in wait.for_", lambda run: run.status is RunStatus.WAITING and "approval" in run.metadata
        )
        await b.terminate()
        stopped = await bridge.engine.retrieve(run_id)
        assert parked(stopped) and stopped.waiting_input is None, workers.logs()

        workers.start("c")
        final = await feed.run_until(run_id, "final", is_final)
    assert final.status is RunStatus.COMPLETED, f"{final.status} {final.error}\n{workers.logs()}"
    assert final.output == {"approval": {"approved": True}}
    assert final.finished_at is not None and final.finished_at - pausing.updated_at >= 2000  # the 2 s passed
    assert events(tmp_path) == ["top", "top", "top", "after"]
    assert final.attempt_number == 1


async def test_a_thousand_parked_runs_cost_no_worker_memory_and_outlive_restarts(
    bridge: Bridge, workers: Workers, tmp_path: Path
) -> None:
    tag = f"scale-{os.getpid()}"
    total = WARM_UP_RUNS + SCALE_RUNS
    started = time.monotonic()
    pair = [workers.start("a1", hold="0s"), workers.start("b1", hold="0s")]  # a wait parks its run at once
    for worker in pair:
        await worker.ready()
    rss_started = [worker.rss_kb() for worker in pair]

    def all_parked(count: int) -> Callable[[dict[str, Run]], bool]:
        return lambda runs: len(runs) == count and all(parked(run) for run in runs.values())

    async with Feed(bridge, FeedSpec.for_tags([tag], 0, total), workers) as feed:
        # Triggered in waves, each parked before the next, so no burst leaves room in the heap that would
        # hide what parked runs keep. The first waves grow the heap once (code paths run for the first time,
        # connections, allocator arenas): the growth is measured after them.
        for wave in range(total // WAVE_RUNS):
            if wave * WAVE_RUNS == WARM_UP_RUNS:
                rss_warm = [worker.rss_kb() for worker in pair]
            await gathered([trigger(bridge, "proc-wait", None, [tag]) for _ in range(WAVE_RUNS)])
            await feed.until(f"{(wave + 1) * WAVE_RUNS} runs parked", all_parked((wave + 1) * WAVE_RUNS))
        parked_at = time.monotonic()
        rss_parked = [worker.rss_kb() for worker in pair]
        growth_per_run = (sum(rss_parked) - sum(rss_warm)) * 1024 / SCALE_RUNS
        print(
            f"\n{total} runs parked {parked_at - started:.1f} s after the workers started; VmRSS (kB) of the two "
            f"workers: started {rss_started}, {WARM_UP_RUNS} parked {rss_warm}, {total} parked {rss_parked}: "
            f"{growth_per_run:.0f} bytes per waiting run over the last {SCALE_RUNS}"
        )
        assert growth_per_run < 2048, f"a parked run holds nothing in its worker\n{workers.logs()}"
        before = {run.id: run.version for run in feed.runs.values()}

        for generation in (2, 3):  # two restarts of both workers while every run waits
            for worker in pair:
                await worker.terminate()
            pair = [workers.start(f"a{generation}", hold="0s"), workers.start(f"b{generation}", hold="0s")]
            for worker in pair:
                await worker.ready()
        snapshot = await bridge.feeds.snapshot(FeedSpec.for_tags([tag], 0, total))
        assert {run.id: run.version for run in snapshot} == before  # the restarts left the parked runs alone

        tokens = {run.id: run.metadata["tokenId"] for run in feed.runs.values()}
        await gathered([bridge.waitpoints.complete(token, {"run": run_id}) for run_id, token in tokens.items()])
        await feed.until(
            f"all {total} final", lambda runs: all(run.status.is_final for run in runs.values()), timeout=60
        )
    print(f"all {total} completed {time.monotonic() - parked_at:.1f} s after they were all parked")
    statuses = {run.status for run in feed.runs.values()}
    assert statuses == {RunStatus.COMPLETED}, f"{statuses}\n{workers.logs()}"  # none CRASHED
    assert all(run.output == {"run": run.id} for run in feed.runs.values())


async def gathered(calls: list[Any], at_once: int = 50) -> list[Any]:
    """Awaits the coroutines, `at_once` at a time; their results in order."""
    limit = asyncio.Semaphore(at_once)

    async def one(call: Any) -> Any:
        async with limit:
            return await call

    return await asyncio.gather(*(one(call) for call in calls))


@pytest.mark.parametrize("stop", ["sigterm", "sigkill"])
async def test_a_parent_waiting_on_three_children_resumes_across_a_worker_restart(
    bridge: Bridge, workers: Workers, tmp_path: Path, stop: str
) -> None:
    """The parent waits while its children wait; its worker goes (a deploy: the parent parks; a crash: it is
    held in the worker's memory, taken over after the lease); another worker runs the children to their end
    and resumes the parent by replay, which gets the same children's results."""
    a = workers.start("a", lease=SHORT_LEASE, hold="1s" if stop == "sigterm" else "1h")
    await a.ready()
    run_id = await trigger(bridge, "proc-parent", {"dir": str(tmp_path), "seconds": 3})
    async with run_feed(bridge, run_id, workers) as feed:
        await feed.run_until(run_id, "waiting for its children", parked if stop == "sigterm" else is_waiting)
        await (a.terminate() if stop == "sigterm" else a.kill())
        workers.start("b", lease=SHORT_LEASE, hold="1s")
        final = await feed.run_until(run_id, "final", is_final, timeout=40)
    assert final.status is RunStatus.COMPLETED, f"{final.status} {final.error}\n{workers.logs()}"
    assert final.output == [2, {"task": "proc-child", "cause": "child 2 failed", "run": True}, 6]
    noted = events(tmp_path)
    assert noted.count("top") >= 2 and noted.count("after") == 1  # resumed by replay, finished once
    children = {line for line in noted if line.startswith("child ")}
    assert len(children) == 3, noted  # the replays triggered no second child
    for child_line in children:
        child = await bridge.engine.retrieve(child_line.removeprefix("child "))
        assert (child.parent_task_run_id, child.root_task_run_id, child.depth) == (run_id, run_id, 1)


async def test_a_concurrency_limit_of_2_holds_across_two_worker_processes(bridge: Bridge, workers: Workers) -> None:
    """`proc-gated` declares a queue with a limit of 2; two workers of 10 slots each take its runs. Each run
    notes how many of the queue's runs executed as it started; the test frees the oldest whenever two run."""
    pair = [workers.start("a"), workers.start("b")]
    for worker in pair:
        await worker.ready()  # its task queues are declared: triggers find the limit
    assert bridge.settings.redis_url is not None
    key = f"{bridge.settings.key_prefix}:gated"
    total = 8
    tag = f"gated-{os.getpid()}"
    redis = Redis.from_url(bridge.settings.redis_url)
    try:
        async with Feed(bridge, FeedSpec.for_tags([tag], 0, total), workers) as feed:
            for n in range(total):
                await trigger(bridge, "proc-gated", {"key": key, "redis": bridge.settings.redis_url, "n": n}, [tag])
            seen: list[int] = []  # how many of the queue's runs executed, as each run saw it on start
            executing: list[str] = []
            for _ in range(total):
                reply = await redis.blpop([f"{key}:started"], timeout=STATE_SECONDS)
                assert reply is not None, f"no run started within {STATE_SECONDS} s after {seen}\n{workers.logs()}"
                n, count = reply[1].decode().split()
                seen.append(int(count))
                executing.append(n)
                if len(executing) == 2:  # both slots taken: free the oldest
                    await redis.rpush(f"{key}:go:{executing.pop(0)}", 1)
            await redis.rpush(f"{key}:go:{executing.pop()}", 1)
            await feed.until("all completed", lambda runs: len(runs) == total and all(map(is_final, runs.values())))
        assert {run.status for run in feed.runs.values()} == {RunStatus.COMPLETED}
        assert seen == [1] + [2] * (total - 1), seen  # the limit was reached, and never passed
    finally:
        await redis.aclose()
