"""Tasks the behavioural tests trigger, in their own registry."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

from bridge import metadata
from bridge.worker.registry import RunContext, TaskRegistry

registry = TaskRegistry()


@registry.add_task("echo")
async def echo(payload: Any) -> Any:
    return {"echo": payload}


@registry.add_task("progress")
async def progress(payload: dict[str, Any]) -> dict[str, Any]:
    steps = int(payload.get("steps", 3))
    for step in range(1, steps + 1):
        await metadata.set("progress", step / steps)
    return {"steps": steps}


@registry.add_task("fail")
async def fail(payload: Any) -> None:
    raise ValueError(f"failed on purpose: {payload}")


gates: dict[str, asyncio.Event] = {}


@registry.add_task("wait-for-gate")
async def wait_for_gate(payload: dict[str, Any], context: RunContext) -> str:
    """Blocks until the test opens `gates[payload["gate"]]` (or cancels the run)."""
    await metadata.set("waiting", True)
    await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    return context.run_id


@registry.add_task("hang-five-seconds", max_duration=5)
async def hang_five_seconds(payload: dict[str, Any]) -> None:
    """`wait-for-gate` declaring a maxDuration of 5 s (tests/test_max_duration.py)."""
    await gates.setdefault(payload["gate"], asyncio.Event()).wait()


@registry.add_task("one-at-a-time", queue={"concurrency_limit": 1})
async def one_at_a_time(payload: dict[str, Any], context: RunContext) -> str:
    """`wait-for-gate` on a queue of its own declared with a concurrency limit of 1 (tests/test_queues.py)."""
    await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    return context.run_id


@registry.add_task("slow-progress")
async def slow_progress(payload: dict[str, Any]) -> dict[str, Any]:
    """Three metadata steps `delay` seconds apart (default 0.2): simulated work, so watchers see it running.

    With a `gate`, it waits after the first step until the test opens `gates[payload["gate"]]`.
    """
    delay = float(payload.get("delay", 0.2))
    for step in (1, 2, 3):
        if step == 2 and "gate" in payload:
            await gates.setdefault(payload["gate"], asyncio.Event()).wait()
        await asyncio.sleep(delay)
        await metadata.set("progress", step / 3)
    return {"done": payload.get("name", "")}


@registry.add_task("stream-numbers")
async def stream_numbers(payload: dict[str, Any]) -> int:
    """Appends 0..count-1 to the "numbers" stream, in bursts (piped) so appends batch."""
    from bridge import streams

    count = int(payload["count"])

    async def numbers() -> Any:
        for number in range(count):
            yield number

    piped = streams.define("numbers").pipe(numbers())
    await piped.wait_until_complete()
    return count


@registry.add_task("stream-chunks")
async def stream_chunks(payload: dict[str, Any]) -> int:
    """Pipes 0..count-1 to the stream `key` (default "numbers") in bursts of `burst` chunks.

    Between bursts it sleeps `pause` seconds (simulated work, so readers see a live stream). With
    a `gate`, it writes the first `gate_at` chunks (default 0), then waits until the test opens
    `gates[payload["gate"]]`, so readers can connect at a known point of the stream.
    """
    from bridge import streams

    count = int(payload["count"])
    burst = int(payload.get("burst", count or 1))
    pause = float(payload.get("pause", 0))
    gate_at = int(payload.get("gate_at", 0)) if "gate" in payload else -1

    async def numbers() -> Any:
        for number in range(count):
            if number == gate_at:
                await gates.setdefault(payload["gate"], asyncio.Event()).wait()
            if number and number % burst == 0 and pause:
                await asyncio.sleep(pause)
            yield number

    piped = streams.define(payload.get("key", "numbers")).pipe(numbers())
    await piped.wait_until_complete()
    return count


@registry.add_task("await-approval")
async def await_approval(payload: dict[str, Any]) -> Any:
    """Waits (WAITING, slot freed) for one value on "approval" and returns it."""
    from bridge import streams

    return await streams.input("approval").wait(timeout=payload.get("timeout", 30))


@registry.add_task("collect-inputs")
async def collect_inputs(payload: dict[str, Any]) -> list[Any]:
    """Collects every value sent on "items" (handlers and once together) until one is "stop"."""
    from bridge import streams

    items = streams.input("items")
    seen: list[Any] = []
    subscription = items.on(seen.append)
    try:
        # Not `while once() != "stop"`: values stored together are dispatched together, so "stop" may
        # reach the handler alone while the loop has not called `once` again yet.
        while "stop" not in seen:
            await items.once(timeout=payload.get("timeout", 30))
    finally:
        subscription.off()
    return seen


# Input streams (tests/test_inputs.py)

inputs_seen: dict[str, list[Any]] = {}  # run id -> values its `on` handler received (kept after the run ends)
inputs_changed = asyncio.Event()  # set whenever `inputs_seen` grows


def _record_input(run_id: str) -> Any:
    seen = inputs_seen.setdefault(run_id, [])

    def record(value: Any) -> None:
        seen.append(value)
        inputs_changed.set()

    return record


@registry.add_task("input-semantics")
async def input_semantics(payload: dict[str, Any]) -> dict[str, Any]:
    """Walks through the dispatch rules, one phase at a time (the phase is in metadata; the test sends).

    Before the gate opens the test sent "a", "b": buffered until this attaches.
    """
    from bridge import streams

    items = streams.input("items")
    out: dict[str, Any] = {}
    await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    out["first"] = await items.once(timeout=10)  # "a": sent before anything listened
    out["peeked"] = [items.peek(), items.peek()]  # "b" twice: peek does not consume
    out["second"] = await items.once(timeout=10)  # "b", from the buffer
    seen: list[Any] = []
    got = asyncio.Event()

    def handler(value: Any) -> None:
        seen.append(value)
        got.set()

    subscription = items.on(handler)
    await metadata.set("phase", "waiter")  # the test sends "c": to the oldest waiter AND the handler
    out["third"] = await items.once(timeout=10)
    await metadata.set("phase", "handlers")  # the test sends "d": no waiter, so the handler only
    async with asyncio.timeout(10):
        while len(seen) < 2:
            got.clear()
            await got.wait()
    subscription.off()
    await metadata.set("phase", "buffer")  # the test sends "e", "f": nobody listens, so buffered
    async with asyncio.timeout(10):  # bounded: until the reader has dispatched them into the buffer
        while items.peek() is None:  # noqa: ASYNC110 - nothing to await: buffering is silent
            await asyncio.sleep(0.005)
    out["peeked_buffer"] = items.peek()
    drained: list[Any] = []
    items.on(drained.append).off()  # `on` drains the buffer into the new handler at once
    out["drained"] = drained
    out["peek_after_drain"] = items.peek()
    out["seen"] = seen
    return out


@registry.add_task("input-timeout")
async def input_timeout(payload: dict[str, Any]) -> str:
    """once/wait on "never" with a short timeout; with `catch`, returns the error's name instead of failing."""
    from bridge import streams
    from bridge.streams import InputStreamTimeoutError

    never = streams.input("never")
    call = never.wait if payload.get("mode") == "wait" else never.once
    try:
        await call(timeout=payload.get("timeout", 0.2))
    except InputStreamTimeoutError as exc:
        if not payload.get("catch"):
            raise
        await metadata.set("caught", type(exc).__name__)
        return "timed out"
    return "unexpected value"


@registry.add_task("first-input-then-finish")
async def first_input_then_finish(payload: Any, context: RunContext) -> Any:
    """Records every value on "items" with an `on` handler it never removes, and returns after the first."""
    from bridge import streams

    items = streams.input("items")
    items.on(_record_input(context.run_id))
    return await items.once(timeout=30)


@registry.add_task("write-then-await-stop")
async def write_then_await_stop(payload: dict[str, Any]) -> int:
    """Writes `count` chunks to "ai", says so in metadata, then waits for a value on "stop"."""
    from bridge import streams

    count = int(payload["count"])

    async def numbers() -> Any:
        for number in range(count):
            yield number

    await streams.define("ai").pipe(numbers()).wait_until_complete()
    await metadata.set("written", count)
    await streams.input("stop").once(timeout=60)
    return count


@registry.add_task("await-token")
async def await_token(payload: dict[str, Any]) -> dict[str, Any]:
    """Creates a wait token (options from the payload), shows its id in metadata, waits for it.

    With `tokenId` in the payload it waits for that token instead of creating one."""
    from bridge import wait

    token_id = payload.get("tokenId")
    if token_id is None:
        token = await wait.create_token(
            timeout=payload.get("timeout"), idempotency_key=payload.get("idempotencyKey"), tags=payload.get("tags")
        )
        token_id = token.id
    await metadata.set("tokenId", token_id)
    result = await wait.for_token(token_id)
    if result.ok:
        return {"ok": True, "output": result.output}
    return {"ok": False, "error": str(result.error)}


@registry.add_task("pause")
async def pause(payload: dict[str, Any]) -> str:
    """`wait.for_(seconds=...)`, or `wait.until(payload["until"])` (ISO) with `throw` for throw_if_in_the_past."""
    from datetime import datetime

    from bridge import wait

    if "until" in payload:
        await wait.until(datetime.fromisoformat(payload["until"]), throw_if_in_the_past=payload.get("throw", False))
    else:
        await wait.for_(seconds=payload["seconds"])
    return "resumed"


# Durable runs (tests/test_durable.py): what each execution did, by run id, so a test can tell what ran
# again on a resume and what did not.
executions: dict[str, list[str]] = {}


def _note(run_id: str, what: str) -> None:
    executions.setdefault(run_id, []).append(what)


@registry.add_task("durable-review")
async def durable_review(payload: dict[str, Any], context: RunContext) -> dict[str, Any]:
    """A side effect in a step, a metadata increment and two chunks, then a wait token; then one more chunk."""
    from bridge import steps, streams, wait

    _note(context.run_id, "top")
    sent = await steps.run("send", lambda: _note(context.run_id, "sent") or {"sent": True})
    await metadata.increment("counter")
    log = streams.define("log")
    await log.append("before-1")
    await log.append("before-2")
    token = await wait.create_token(timeout=payload.get("timeout", 60))
    await metadata.set("tokenId", token.id)
    result = await wait.for_token(token)
    await log.append("after")
    return {"sent": sent, "result": result.output if result.ok else None}


@registry.add_task("durable-flaky", retry={"max_attempts": 3, "min_timeout": 0.2, "factor": 2, "randomize": False})
async def durable_flaky(payload: dict[str, Any], context: RunContext) -> dict[str, Any]:
    """A step, then a failure on the first `fail_attempts` attempts (counted by the step's own runs)."""
    from bridge import steps

    _note(context.run_id, "top")
    await steps.run("effect", lambda: _note(context.run_id, "effect") or 1)
    if executions[context.run_id].count("top") <= payload.get("fail_attempts", 1):
        raise RuntimeError("flaky on purpose")
    return {"attempts": executions[context.run_id].count("top")}


@registry.add_task("durable-abort", retry={"max_attempts": 3, "min_timeout": 0.1})
async def durable_abort(payload: Any, context: RunContext) -> None:
    from bridge import AbortTaskRunError

    _note(context.run_id, "top")
    raise AbortTaskRunError("no point retrying")


step_names: dict[str, str] = {}  # run id -> the name the next execution gives its first step


@registry.add_task("durable-changing", retry={"max_attempts": 2, "min_timeout": 0.1})
async def durable_changing(payload: Any, context: RunContext) -> None:
    """Its first step's name changes between attempts, as a deploy of changed code would."""
    from bridge import steps

    name = step_names.get(context.run_id, "first-name")
    await steps.run(name, lambda: 1)
    step_names[context.run_id] = "renamed"
    raise RuntimeError("fail once, so the next attempt replays")


@registry.add_task("durable-concurrent-steps")
async def durable_concurrent_steps(payload: Any) -> Any:
    """Two steps at once: a journal cannot replay them in a reliable order."""
    from bridge import steps

    async def slow() -> int:
        await asyncio.sleep(0)
        return 1

    return await asyncio.gather(steps.run("a", slow), steps.run("b", slow))


@registry.add_task("durable-concurrent-metadata")
async def durable_concurrent_metadata(payload: dict[str, Any]) -> None:
    """Many metadata changes at once, then a wait that parks: the replay must not apply any again."""
    from bridge import wait

    await asyncio.gather(*(metadata.increment("counter") for _ in range(payload["count"])))
    await wait.for_(seconds=payload["seconds"])


@registry.add_task("durable-append-in-step")
async def durable_append_in_step(payload: Any) -> None:
    """A stream append inside a step: a replay would not run it, so it is refused."""
    from bridge import steps, streams

    async def effect() -> None:
        await streams.append("log", "inside")

    await steps.run("effect", effect)


@registry.add_task("durable-metadata-in-step", retry={"max_attempts": 2, "min_timeout": 0.1})
async def durable_metadata_in_step(payload: Any, context: RunContext) -> None:
    """Metadata changed inside a step (once, with the step) and around it (once each, replays skip them)."""
    from bridge import steps

    async def effect() -> int:
        await metadata.increment("inside")
        return 1

    await metadata.increment("before")
    await steps.run("effect", effect)
    await metadata.increment("after")
    _note(context.run_id, "top")
    if executions[context.run_id].count("top") == 1:
        raise RuntimeError("fail once, so the next attempt replays")


@registry.add_task("child-gated")
async def child_gated(payload: dict[str, Any], context: RunContext) -> int:
    """Notes its run id under `key`; waits for `gates[gate]` when given; fails when `fail` is set, else 2n."""
    from bridge import AbortTaskRunError

    _note(payload["key"], context.run_id)
    if "gate" in payload:
        await gates.setdefault(payload["gate"], asyncio.Event()).wait()
    if payload.get("fail"):
        raise AbortTaskRunError(f"child {payload['n']} failed")
    return int(payload["n"]) * 2


@registry.add_task("parent-batch")
async def parent_batch(payload: dict[str, Any], context: RunContext) -> list[Any]:
    """Waits for a batch of `child-gated` runs (tagged `tag`); returns each output, or its unwrap error."""
    from bridge import SubtaskUnwrapError, tasks

    _note(context.run_id, "top")
    items = [{"payload": child, "options": {"tags": [payload["tag"]]}} for child in payload["children"]]
    results = await tasks.batch_trigger_and_wait("child-gated", items)
    outputs: list[Any] = []
    for result in results.runs:
        try:
            outputs.append(result.unwrap())
        except SubtaskUnwrapError as exc:
            outputs.append([exc.task_id, exc.run_id == result.id, exc.cause.name, exc.cause.message])
    _note(context.run_id, "after")
    return outputs


@registry.add_task("parent-one")
async def parent_one(payload: dict[str, Any], context: RunContext) -> Any:
    """`trigger_and_wait` on one `child-gated` run; returns its output."""
    from bridge import tasks

    _note(context.run_id, "top")
    result = await tasks.trigger_and_wait("child-gated", payload["child"])
    return {"output": result.unwrap(), "child": result.id}


@registry.add_task("parent-in-queue")
async def parent_in_queue(payload: dict[str, Any]) -> Any:
    """`trigger_and_wait` on an `echo` run on the queue `payload["queue"]` (tests/test_queues.py)."""
    from bridge import tasks

    return (await tasks.trigger_and_wait("echo", "child", queue=payload["queue"])).unwrap()


@registry.add_task("parent-mixed")
async def parent_mixed(payload: Any) -> list[Any]:
    """`batch.trigger_and_wait` over two tasks."""
    from bridge import batch

    results = await batch.trigger_and_wait([{"id": "echo", "payload": "first"}, {"id": "fail", "payload": None}])
    return [[result.ok, result.task_identifier, result.output] for result in results.runs]


@registry.add_task("sized-output")
async def sized_output(payload: int) -> str:
    return "x" * payload


@registry.add_task("parent-of-big-outputs")
async def parent_of_big_outputs(payload: list[int]) -> list[Any]:
    """Waits for one `sized-output` run per size; returns each result's ok and error name."""
    from bridge import tasks

    results = await tasks.batch_trigger_and_wait("sized-output", [{"payload": size} for size in payload])
    return [[result.ok, result.error.name if result.error else None] for result in results.runs]


# Fault tests (tests/test_pubsub_faults.py, tests/test_reconnect_storm.py): a task that keeps writing


@dataclass
class Ticks:
    """How many ticks a `tick-until-gate` run wrote so far (registered under its gate before the trigger)."""

    written: int = 0
    grew: asyncio.Event = field(default_factory=asyncio.Event)

    async def until(self, count: int, timeout: float = 30.0) -> None:
        async with asyncio.timeout(timeout):
            while self.written < count:
                self.grew.clear()
                await self.grew.wait()


ticks_by_gate: dict[str, Ticks] = {}


@registry.add_task("tick-until-gate")
async def tick_until_gate(payload: dict[str, Any]) -> int:
    """Every `interval` seconds: metadata `tick` = n, then chunk n on "ticks", until the gate opens.
    Returns how many ticks it wrote."""
    from bridge import streams

    ticks = streams.define("ticks")
    gate = gates.setdefault(payload["gate"], asyncio.Event())
    progress = ticks_by_gate.get(payload["gate"], Ticks())
    n = 0
    while not gate.is_set():
        await metadata.set("tick", n)
        await ticks.append(n)
        n += 1
        progress.written = n
        progress.grew.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(payload["interval"]):  # paced, and woken by the gate
                await gate.wait()
    return n
