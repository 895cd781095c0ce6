"""Tasks for tests/test_durable_processes.py, loaded by real `realtime-bridge worker` processes that the test
stops (SIGTERM) or kills (SIGKILL). A task notes what its code did as lines of `<payload["dir"]>/events`,
so the test counts how often each part ran, whichever process ran it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from bridge import AbortTaskRunError, RunContext, SubtaskUnwrapError, metadata, steps, streams, task, wait


def note(payload: dict[str, Any], line: str) -> None:
    with (Path(payload["dir"]) / "events").open("a") as events:
        events.write(line + "\n")


@task(id="proc-review")
async def review(payload: dict[str, Any]) -> dict[str, Any]:
    """A side effect in a step, a metadata increment and two chunks, then a wait token; then one more chunk."""

    def effect() -> dict[str, bool]:
        note(payload, "effect")
        return {"effect": True}

    note(payload, "top")
    done = await steps.run("effect", effect)
    await metadata.increment("counter")
    log = streams.define("log")
    await log.append("before-1")
    await log.append("before-2")
    token = await wait.create_token(timeout="10m")
    await metadata.set("tokenId", token.id)
    result = await wait.for_token(token)
    await log.append("after")
    note(payload, "after")
    return {"effect": done, "result": result.unwrap()}


@task(id="proc-slow-step")
async def slow_step(payload: dict[str, Any]) -> dict[str, Any]:
    """A step whose work lasts until the test sends a value on the input stream "go"."""

    async def body() -> str:
        note(payload, "in-step")
        await metadata.set("inStep", True)
        await streams.input("go").once(timeout="1m")  # a value sent before this execution started counts too
        note(payload, "effect")
        return "done"

    note(payload, "top")
    return {"step": await steps.run("slow", body)}


@task(id="proc-inputs")
async def inputs(payload: dict[str, Any]) -> dict[str, Any]:
    """An input stream `wait`, then `wait.for_(seconds=2)`."""
    note(payload, "top")
    approval = await streams.input("approval").wait(timeout="10m")
    await metadata.set("approval", approval)
    await wait.for_(seconds=2)
    note(payload, "after")
    return {"approval": approval}


@task(id="proc-wait")
async def wait_for_token(payload: Any) -> Any:
    """Waits for a token of its own (its id in the metadata) and returns the completion's data."""
    token = await wait.create_token(timeout="10m")
    await metadata.set("tokenId", token.id)
    return (await wait.for_token(token)).unwrap()


@task(id="proc-child")
async def child(payload: dict[str, Any], context: RunContext) -> int:
    """Notes its run id, waits `seconds` (durably), then doubles `n`, or fails when `fail` is set."""
    note(payload, f"child {context.run_id}")
    await wait.for_(seconds=payload["seconds"])
    if payload.get("fail"):
        raise AbortTaskRunError(f"child {payload['n']} failed")
    return int(payload["n"]) * 2


@task(id="proc-parent")
async def parent(payload: dict[str, Any]) -> list[Any]:
    """Waits for three children in one batch (the second fails); returns their outputs or unwrap errors."""
    note(payload, "top")
    items = [
        {"payload": {"dir": payload["dir"], "n": n, "seconds": payload["seconds"], "fail": n == 2}} for n in (1, 2, 3)
    ]
    results = await child.batch_trigger_and_wait(items)
    outputs: list[Any] = []
    for result in results.runs:
        try:
            outputs.append(result.unwrap())
        except SubtaskUnwrapError as exc:
            outputs.append({"task": exc.task_id, "cause": exc.cause.message, "run": exc.run_id == result.id})
    note(payload, "after")
    return outputs


@task(id="proc-gated", queue={"name": "proc-gated", "concurrency_limit": 2})
async def gated(payload: dict[str, Any]) -> int:
    """Counts the runs of its queue executing at once in the test's Redis (`<key>:running`), notes the count
    it saw on start (`<key>:started`), then holds until the test pushes to `<key>:go:<n>`."""
    key = payload["key"]
    redis = Redis.from_url(payload["redis"])
    try:
        # Counted and noted in one step: two runs starting together would otherwise note their counts in
        # either order, and the test reads the order.
        running = int(
            await redis.eval(
                "local n = redis.call('INCR', KEYS[1]) redis.call('RPUSH', KEYS[2], ARGV[1] .. ' ' .. n) return n",
                2,
                f"{key}:running",
                f"{key}:started",
                str(payload["n"]),
            )
        )
        await redis.blpop([f"{key}:go:{payload['n']}"], timeout=30)  # bounded, should the test stop first
        await redis.decr(f"{key}:running")  # before the run ends and frees its slot
    finally:
        await redis.aclose()
    return running
