"""Wait-token and durable-run benchmark, with Redis: complete -> task resumed, by the path the resume takes,
how late a timeout fires, and what the run journal costs per step.

    .venv/bin/python bench/waitpoints.py            # 1,000 runs per scenario at 500 completions/s (~50 s)
    .venv/bin/python bench/waitpoints.py --quick    # 300 runs at 300/s, fewer journal runs (~25 s)
    .venv/bin/python bench/waitpoints.py --quick --only inplace,parked

Every scenario starts its own `redis-server` on a free loopback port and its own bridge processes
(`realtime-bridge serve --redis-url ... --tasks bench/waitpoints.py`: the server and its worker, 10
slots), run from this checkout. This process (the SDK on Redis) creates one wait token per run,
triggers one `bench-wait` run per token, and once every run is where the scenario wants it, completes
the tokens at a fixed rate with `{"t": <CLOCK_MONOTONIC>}` (the clock is shared by every process on
the machine). Each task reports `monotonic() - t` once `wait.for_token` returned, and its execution
number: 1 = resumed in place (the run was held), 2 = resumed by replay (it had parked). Before the
completions, a 1 s settle (not in `default`): the feed shows a run WAITING before its worker listens.

A wait holds its run in the worker for `BRIDGE_WAIT_HOLD` (default 2 s); past that the run parks (no
process) and a completion queues it again: a worker then runs the task function from the top, replaying
the journal. Scenarios:

  default   the bridge's default hold, as published before durable runs: the runs that waited longer
            than the hold are parked, so this may mix both paths (it says how many of each); then
            timeouts: runs whose tokens time out after 1 s report how late they resumed
  inplace   BRIDGE_WAIT_HOLD=600s, longer than the scenario: every completion resumes in place
  parked    BRIDGE_WAIT_HOLD=0.1s: every run parked before the first completion; all resume by replay
  restart   BRIDGE_WAIT_HOLD=0.1s: the runs parked on bridge A, A stopped (SIGTERM), bridge B started,
            then the completions: all resume by replay on B
  steps     journal cost: a task doing N `steps.run` of a trivial function (one journal append each),
            then a wait that parks; completed, it resumes by replaying the N steps. Live cost per step,
            replay cost per step, complete -> last replayed step passed, the journal's read + decode
  memory    the same as `steps` on the in-memory backend, in this process (bridge + worker + SDK)

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import CpuWindow, bridge_process, percentile, redis_server  # noqa: E402
from bridge import steps, task, wait  # noqa: E402
from bridge.worker.context import require_run_scope  # noqa: E402

WAIT_TASK = "bench-wait"
STEPS_TASK = "bench-steps"
SECRET = os.environ.setdefault("RB_BENCH_SECRET_KEY", "tr_bench_" + os.urandom(24).hex())
TIMEOUT_SECONDS = 1.0
CONCURRENCY = 10  # the worker's default slots
SHORT_HOLD = "0.1s"
SETTLE_SECONDS = 1.0
LONG_HOLD = "600s"  # longer than any scenario
TASK_FILE = str(Path(__file__).resolve())
SCENARIOS = ("default", "inplace", "parked", "restart", "steps", "memory")


@task(id=WAIT_TASK)
async def bench_wait(payload: dict[str, Any]) -> dict[str, Any]:
    entered = time.monotonic()
    durable = require_run_scope(WAIT_TASK).durable
    replayed = durable.execution > 1  # a later execution: it resumes a parked run by replay
    result = await wait.for_token(payload["tokenId"])
    resumed_monotonic, resumed_wall = time.monotonic(), time.time()
    path = {"execution": durable.execution, "replayed": replayed}
    if result.ok:
        t = float(result.output["t"]) if result.output else 0.0
        return {"latency": resumed_monotonic - t, "entered": entered - t, "t": t, **path}
    token = await wait.retrieve_token(payload["tokenId"])
    assert token.timeout_at is not None
    return {"late": resumed_wall - token.timeout_at.timestamp(), **path}


def _trivial(i: int) -> int:
    return i


@task(id=STEPS_TASK)
async def bench_steps(payload: dict[str, Any]) -> dict[str, Any]:
    durable = require_run_scope(STEPS_TASK).durable
    entered = time.monotonic()
    for i in range(payload["n"]):  # bounded: n < the journal's 10,000 entries
        await steps.run("s", _trivial, i)
    passed = time.monotonic()
    # Recorded once, by the live execution: the replaying one gets the live figures back.
    live = await steps.run("live", lambda: {"seconds": passed - entered, "execution": durable.execution})
    result = await wait.for_token(payload["tokenId"])
    t = float(result.output["t"]) if result.output else 0.0
    return {
        "live": live["seconds"],
        "live_execution": live["execution"],
        "execution": durable.execution,
        "replay": passed - entered,  # function entered -> last replayed step passed (0 when in place)
        "to_entry": entered - t,  # completion -> task function entered: enqueue, claim, start, journal read
        "to_last_step": passed - t,  # completion -> last replayed step passed
    }


# --- the SDK side ----------------------------------------------------------------------------------------


def ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


def summary(values: list[float]) -> dict[str, float]:
    """Percentiles of `values` in ms."""
    got = ms(values)
    return {
        "n": len(got),
        "p50": percentile(got, 50),
        "p90": percentile(got, 90),
        "p99": percentile(got, 99),
        "max": max(got),
    }


def fmt(s: dict[str, float]) -> str:
    return f"p50 {s['p50']:.2f} ms   p90 {s['p90']:.2f} ms   p99 {s['p99']:.2f} ms   max {s['max']:.2f} ms"


async def bounded(what: str, seconds: float, check: Callable[[], Awaitable[bool]], every: float = 0.05) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {seconds} s")
        await asyncio.sleep(every)


async def follow_tag(run_ids: list[str], tag: str, condition: Any, timeout: float) -> dict[str, Any]:
    """Follows the tag feed until every run satisfies `condition`; returns the runs by id."""
    from bridge import runs

    wanted, seen = set(run_ids), {}
    async with asyncio.timeout(timeout):
        async for run in runs.subscribe_to_runs_with_tag(tag):
            if run.id in wanted and condition(run):
                seen[run.id] = run
                if len(seen) == len(wanted):
                    return seen
    raise RuntimeError("the tag feed ended early")


async def all_parked(run_ids: list[str]) -> bool:
    from bridge import runs

    for run_id in run_ids:  # bounded: one read per run
        if (await runs.retrieve(run_id)).waiting_on is None:
            return False
    return True


async def start_waiting(count: int, tag: str, timeout: float | None) -> tuple[list[str], list[str]]:
    from bridge import tasks

    token_ids = [(await wait.create_token(timeout=timeout)).id for _ in range(count)]
    run_ids = [(await tasks.trigger(WAIT_TASK, {"tokenId": t}, tags=[tag])).id for t in token_ids]
    return token_ids, run_ids


async def complete_at(token_ids: list[str], rate: int) -> float:
    """Completes every token, on a fixed schedule; returns the rate achieved."""
    started = time.monotonic()
    for n, token_id in enumerate(token_ids):  # bounded: one completion per token
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await wait.complete_token(token_id, {"t": time.monotonic()})
    return len(token_ids) / (time.monotonic() - started)


def path_report(outputs: list[dict[str, Any]], rate: float) -> dict[str, Any]:
    in_place = [o for o in outputs if not o["replayed"]]
    replayed = [o for o in outputs if o["replayed"]]
    report: dict[str, Any] = {"completions_per_s": rate, "in_place": len(in_place), "replayed": len(replayed)}
    report["latency"] = summary([o["latency"] for o in outputs])
    if in_place and replayed:
        report["latency_in_place"] = summary([o["latency"] for o in in_place])
        report["latency_replayed"] = summary([o["latency"] for o in replayed])
    if replayed:
        report["to_function_entered"] = summary([o["entered"] for o in replayed])
    first = min(o["t"] for o in outputs)
    report["series"] = [  # by completion time: [s since the first completion, latency ms, replayed]
        [round(o["t"] - first, 4), round(o["latency"] * 1000, 3), o["replayed"]]
        for o in sorted(outputs, key=lambda o: o["t"])
    ]
    return report


def print_paths(name: str, report: dict[str, Any]) -> None:
    print(
        f"[{name}] complete -> task resumed: {report['latency']['n']} runs at {report['completions_per_s']:.0f}"
        f" completions/s; {report['in_place']} in place, {report['replayed']} by replay"
    )
    n, cpu = report["latency"]["n"], report["cpu_s"]
    per = ", ".join(f"{key} {cpu.get(key, 0) * 1000 / n:.2f}" for key in ("bridge", "redis-server", "bench"))
    print(
        f"  CPU per completion (ms): {per}; other processes: {report['cpu_other_cores']:.2f} cores"
        + ("  DISTURBED" if report["cpu_other_cores"] > 0.15 else "")
    )
    print(f"  all        {fmt(report['latency'])}")
    for key, label in (("latency_in_place", "in place"), ("latency_replayed", "replayed")):
        if key in report:
            print(f"  {label:<10} {fmt(report[key])}")
    if "to_function_entered" in report:
        print(f"  complete -> task function entered (replays): {fmt(report['to_function_entered'])}")


async def stop_sdk() -> None:
    from bridge.runtime import state

    await (await state.current()).stop()


async def completions(
    redis_url: str, count: int, rate: int, parked: bool, between: Any = None, settle: bool = True
) -> dict[str, Any]:
    """`count` waiting runs (all parked first when `parked`), `between()` then, completed at `rate`; with
    `settle`, a pause first: the feed shows a run WAITING before its worker has finished setting the wait
    up (without it, the first completions of `inplace` waited ~75 ms for that backlog)."""
    from bridge import configure

    configure(secret_key=SECRET, redis_url=redis_url)
    try:
        token_ids, run_ids = await start_waiting(count, "bench-complete", None)
        await follow_tag(run_ids, "bench-complete", lambda r: r.status.value == "WAITING", 120)
        if parked:
            await bounded("every run parked", 60, lambda: all_parked(run_ids), every=0.2)
        if between is not None:
            await between()
        if settle:
            await asyncio.sleep(SETTLE_SECONDS)
        window = CpuWindow()
        window.start()
        achieved = await complete_at(token_ids, rate)
        done = await follow_tag(run_ids, "bench-complete", lambda r: r.status.is_final, 120)
        window.stop()
        failed = [run for run in done.values() if run.status.value != "COMPLETED"]
        if failed:
            raise RuntimeError(f"{len(failed)} runs did not complete: {failed[0].status.value} {failed[0].error}")
        report = path_report([run.output for run in done.values()], achieved)
        report["window_s"] = window.seconds
        report["cpu_s"] = window.used  # CPU seconds by process over the window
        report["cpu_other_cores"] = window.cores("other")
        return report
    finally:
        await stop_sdk()


async def timeouts(redis_url: str, count: int) -> dict[str, Any]:
    from bridge import configure

    configure(secret_key=SECRET, redis_url=redis_url)
    try:
        _, run_ids = await start_waiting(count, "bench-timeout", TIMEOUT_SECONDS)
        done = await follow_tag(run_ids, "bench-timeout", lambda r: r.status.is_final, 120)
        outputs = [run.output for run in done.values()]
        report = summary([o["late"] for o in outputs])
        report["min"] = min(ms([o["late"] for o in outputs]))
        report["replayed"] = sum(1 for o in outputs if o["replayed"])
        return report
    finally:
        await stop_sdk()


@contextlib.contextmanager
def bridge_with_hold(redis_url: str, hold: str | None) -> Iterator[subprocess.Popen[bytes]]:
    env = {"BRIDGE_WAIT_HOLD": hold} if hold else {}
    with bridge_process(redis_url, TASK_FILE, SECRET, env) as process:
        yield process


def scenario_default(count: int, rate: int, timeout_runs: int) -> dict[str, Any]:
    with redis_server() as redis_url, bridge_with_hold(redis_url, None):
        report = asyncio.run(completions(redis_url, count, rate, parked=False, settle=False))
        print_paths("default hold", report)
        late = asyncio.run(timeouts(redis_url, timeout_runs))
    print(f"[default hold] timeout -> task resumed, {late['n']} runs with a {TIMEOUT_SECONDS:g} s timeout:")
    print(f"  min {late['min']:.2f} ms   {fmt(late)}   (all due together: they queue for {CONCURRENCY} slots)")
    return {"completions": report, "timeouts": late}


def scenario_simple(name: str, count: int, rate: int) -> dict[str, Any]:
    hold, parked = (LONG_HOLD, False) if name == "inplace" else (SHORT_HOLD, True)
    with redis_server() as redis_url, bridge_with_hold(redis_url, hold):
        report = asyncio.run(completions(redis_url, count, rate, parked=parked))
    print_paths(name, report)
    expected_replays = count if parked else 0
    if report["replayed"] != expected_replays:
        print(f"  WARNING: expected {expected_replays} replays, got {report['replayed']}")
    return report


def scenario_restart(count: int, rate: int) -> dict[str, Any]:
    with redis_server() as redis_url, contextlib.ExitStack() as stack:
        first = contextlib.ExitStack()
        first.enter_context(bridge_with_hold(redis_url, SHORT_HOLD))
        stack.push(first)  # stopped on the way out unless stopped already (closing twice does nothing)

        async def restart() -> None:
            started = time.monotonic()
            await asyncio.to_thread(first.close)  # SIGTERM to bridge A, waits for its exit
            print(f"[restart] bridge A stopped in {time.monotonic() - started:.2f} s")
            await asyncio.to_thread(stack.enter_context, bridge_with_hold(redis_url, SHORT_HOLD))
            await asyncio.sleep(SETTLE_SECONDS)  # B's worker claiming, its hub subscribed

        report = asyncio.run(completions(redis_url, count, rate, parked=True, between=restart))
    print_paths("restart", report)
    if report["replayed"] != count:
        print(f"  WARNING: expected {count} replays, got {report['replayed']}")
    return report


async def journal_runs(ns: list[int], repeats: int) -> dict[int, list[dict[str, Any]]]:
    """For each N, `repeats` runs of STEPS_TASK one at a time (interleaved over the Ns): N steps live,
    a wait that parks, completed once parked, resumed by replay. Then the journal read from here."""
    from bridge import runs, tasks
    from bridge.runtime import state
    from bridge.runtime.journal import Entry

    broker = (await state.current()).broker
    results: dict[int, list[dict[str, Any]]] = {n: [] for n in ns}
    for _ in range(repeats):
        for n in ns:
            token = await wait.create_token()
            handle = await tasks.trigger(STEPS_TASK, {"n": n, "tokenId": token.id})
            await bounded("the steps run parked", 60, functools.partial(all_parked, [handle.id]), every=0.01)
            await asyncio.sleep(0.05)  # its execution unwound
            await wait.complete_token(token.id, {"t": time.monotonic()})
            final = None
            async with asyncio.timeout(60):
                async for run in runs.subscribe_to_run(handle.id):
                    final = run
            assert final is not None and final.status.value == "COMPLETED", final
            output = dict(final.output)
            reads = []
            for _ in range(5):  # bounded: five reads of the whole journal
                started = time.monotonic()
                entries = [Entry.decode(raw) for raw in await broker.read_journal(handle.id)]
                reads.append(time.monotonic() - started)
            assert len(entries) == n + 2, len(entries)  # the steps, "live", the wait
            output["read"] = statistics.median(reads)
            results[n].append(output)
    return results


def journal_report(results: dict[int, list[dict[str, Any]]]) -> dict[str, Any]:
    med = statistics.median
    base = results.get(0)
    report: dict[str, Any] = {}
    for n, outputs in results.items():
        assert all(o["live_execution"] == 1 and o["execution"] == 2 for o in outputs), outputs
        row: dict[str, Any] = {"runs": len(outputs)}
        for key in ("live", "replay", "to_entry", "to_last_step", "read"):
            values = ms([o[key] for o in outputs])
            row[key] = {"median": med(values), "min": min(values), "max": max(values)}
        if n:
            row["live_per_step_us"] = [v * 1e6 / n for v in sorted(o["live"] for o in outputs)]
            row["replay_per_step_us"] = [v * 1e6 / n for v in sorted(o["replay"] for o in outputs)]
            if base:
                extra = med([o["to_last_step"] for o in outputs]) - med([o["to_last_step"] for o in base])
                row["to_last_step_extra_per_step_us"] = extra * 1e6 / n
        report[str(n)] = row
    return report


def print_journal(name: str, report: dict[str, Any]) -> None:
    print(f"[{name}] journal cost (median over the runs, [min-max]); times in ms unless marked:")

    def cell(row: dict[str, Any], key: str) -> str:
        v = row[key]
        return f"{v['median']:.2f} [{v['min']:.2f}-{v['max']:.2f}]"

    for n, row in report.items():
        print(f"  N={n:>5} ({row['runs']} runs)")
        print(f"    live, N steps:                              {cell(row, 'live')}")
        print(f"    replay, task entered -> last step passed:   {cell(row, 'replay')}")
        print(f"    complete -> task function entered:          {cell(row, 'to_entry')}")
        print(f"    complete -> last replayed step passed:      {cell(row, 'to_last_step')}")
        print(f"    journal read + decode (from the SDK side):  {cell(row, 'read')}")
        if "live_per_step_us" in row:
            live = ", ".join(f"{v:.1f}" for v in row["live_per_step_us"])
            replay = ", ".join(f"{v:.2f}" for v in row["replay_per_step_us"])
            print(f"    per step, live (us):    {live}")
            print(f"    per step, replay (us):  {replay}")
        if "to_last_step_extra_per_step_us" in row:
            extra = row["to_last_step_extra_per_step_us"]
            print(f"    complete -> last step, over N=0, per step: {extra:.2f} us")


def scenario_steps(ns: list[int], repeats: int) -> dict[str, Any]:
    from bridge import configure

    async def measure(redis_url: str) -> dict[int, list[dict[str, Any]]]:
        configure(secret_key=SECRET, redis_url=redis_url)
        try:
            return await journal_runs(ns, repeats)
        finally:
            await stop_sdk()

    with redis_server() as redis_url, bridge_with_hold(redis_url, SHORT_HOLD):
        report = journal_report(asyncio.run(measure(redis_url)))
    print_journal("steps, Redis", report)
    return report


def scenario_memory(ns: list[int], repeats: int) -> dict[str, Any]:
    from bridge.config import Settings
    from bridge.runtime import state
    from bridge.runtime.core import Bridge
    from bridge.worker.executor import Worker
    from bridge.worker.registry import default_registry

    async def measure() -> dict[int, list[dict[str, Any]]]:
        bridge = Bridge(Settings(secret_key=SECRET, wait_hold_seconds=0.1))
        await bridge.start()
        state.use(bridge)
        worker = Worker(bridge, default_registry)
        await worker.start()
        try:
            return await journal_runs(ns, repeats)
        finally:
            await worker.stop(grace=0)
            await bridge.stop()

    report = journal_report(asyncio.run(measure()))
    print_journal("steps, memory (bridge, worker and SDK in this process)", report)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios (default: all)")
    parser.add_argument("--json", help="write every figure to this file")
    parser.add_argument("--count", type=int, help="waiting runs per scenario (default 1,000; --quick 300)")
    parser.add_argument("--rate", type=int, help="completions/s (default 500; --quick 300)")
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    count, rate, timeout_runs = (300, 300, 100) if args.quick else (1000, 500, 200)
    count, rate = args.count or count, args.rate or rate
    ns, repeats = ([0, 100, 1000], 3) if args.quick else ([0, 100, 1000, 5000], 5)
    figures: dict[str, Any] = {"quick": args.quick, "count": count, "rate": rate}
    started = time.monotonic()
    for name in only:
        if name == "default":
            figures[name] = scenario_default(count, rate, timeout_runs)
        elif name in ("inplace", "parked"):
            figures[name] = scenario_simple(name, count, rate)
        elif name == "restart":
            figures[name] = scenario_restart(count, rate)
        elif name == "steps":
            figures[name] = scenario_steps(ns, repeats)
        elif name == "memory":
            figures[name] = scenario_memory(ns, repeats)
    print(f"(all scenarios: {time.monotonic() - started:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
