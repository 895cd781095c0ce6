"""The scenarios of `python -m bench` (issue 14), one function each, for one system at a time. Each returns plain
figures (dicts) for bench/report.py. Server pinned to SERVER_CORE; clients, publisher and Redis on LOAD_CORE."""

from __future__ import annotations

import array
import json
import multiprocessing as mp
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import ROOT
from bench.load import Connection, arrays, clients_process
from bench.longpoll import watchers_process
from bench.streams import LOAD_CORE, SERVER_CORE, cpu_between, percentile, pin, sample_cpu
from bench.systems import System, process_tree, rss_bytes, server
from bench.tasks import TASK_ID

MESSAGE_PAD = 50  # {"t":..,"v":..,"target":..,"p":"x"*50}: ~100 bytes of JSON
DRAIN_S = 1.0  # after a step's last publish, for its last deliveries; again while they keep coming
DRAIN_MAX_S = 10.0
DISTURBED = 15.0  # % of a core taken by other processes above which a window is marked disturbed
P99_LIMIT_MS = 100.0
MAX_MISSING = 0.01  # a step with more than 1% of its deliveries missing (coalesced or lost) ends the stepping


class Load:
    """A clients process pinned to the load core, connected to one server: `report()` after each step."""

    def __init__(self, port: int, connections: list[Connection], bridge: bool) -> None:
        self.start(clients_process, (port, connections, bridge))

    def start(self, target: Callable[..., None], args: tuple[Any, ...]) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=target, args=(*args, child), daemon=True)
        self.process.start()
        _, self.ready, self.connect_s, self.errors = self.receive(200)

    def receive(self, timeout: float) -> Any:
        if not self.conn.poll(timeout):
            raise RuntimeError(f"the clients did not answer within {timeout:.0f} s")
        return self.conn.recv()

    def report(self) -> tuple[dict[str, Any], Any, Any]:
        self.conn.send("report")
        counts, sent, latency = self.receive(120)
        return counts, *arrays(sent, latency)

    def close(self) -> None:
        if self.process.is_alive():
            self.conn.send("stop")
            self.receive(60)
            self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)


class Watchers(Load):
    """Scenario 5's long-poll watchers (bench/longpoll.py) instead of WebSocket clients."""

    def __init__(self, port: int, run_id: str, token: str, count: int) -> None:
        self.start(watchers_process, (port, run_id, token, count))


def trigger_runs(port: int, secret: str, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/tasks/{TASK_ID}/trigger",
            data=json.dumps({"payload": {}}).encode(),
            headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            ids.append(json.loads(answer.read())["id"])
    return ids


def targets_of(system: System, port: int, count: int) -> tuple[list[str], list[Connection]]:
    """`count` targets (runs of the bench task, or channel names), and a subscriber's connection to each."""
    if system.is_bridge:
        from bridge.runtime.access import run_access_token

        runs = trigger_runs(port, system.secret, count)
        return runs, [system.connection(run, run_access_token(system.secret, run)) for run in runs]
    names = [f"feed{n}" for n in range(count)]
    return names, [system.connection(name) for name in names]


def publish(
    system: System, redis: Any, targets: list[str], step: list[float], started: dict[str, int]
) -> dict[str, Any]:
    """Runs the publisher for one step; its pid goes into `started` (for the CPU accounting) once spawned."""
    spec = {"system": system.name, "redis_url": redis.url, "targets": targets, "steps": [step], "pad": MESSAGE_PAD}
    process = subprocess.Popen(
        [system.python, str(ROOT / "bench" / "publish.py"), json.dumps(spec)],
        env=system.env(redis.url),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    pin(process.pid, LOAD_CORE)
    started["publisher"] = process.pid
    try:
        out, err = process.communicate(timeout=(step[3] - time.monotonic_ns()) / 1e9 + 60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    if process.returncode:
        raise RuntimeError(f"{system.name} publisher failed: {err.strip()[-500:]}")
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])[0]
    result["pid"] = process.pid
    return result


def fanout(
    system: System,
    redis: Any,
    log: Path,
    *,
    targets: int,
    readers: int,
    rates: list[float],
    warmup_s: float,
    window_s: float,
    workers: int = 1,
    stop_early: bool = True,
) -> list[dict[str, Any]]:
    """`targets` runs (channels, groups) x `readers` subscribers each; one step per rate (messages per target
    per s) until p99 passes 100 ms or more than 1% of the deliveries are missing (`stop_early`)."""
    steps: list[dict[str, Any]] = []
    with server(system, redis.url, log, workers) as (port, pid):
        pinned = workers == 1 and pin(pid, SERVER_CORE)
        names, connections = targets_of(system, port, targets)
        load = Load(port, [c for c in connections for _ in range(readers)], system.is_bridge)
        try:
            if load.ready < targets * readers:
                raise RuntimeError(f"{load.ready} of {targets * readers} subscribed: {load.errors}")
            for rate in rates:
                start = time.monotonic_ns() + 300_000_000  # the publisher's start-up
                measure = start + int(warmup_s * 1e9)
                end = measure + int(window_s * 1e9)
                pids = {"server": pid, "redis": redis.process.pid, "clients": load.process.pid}
                step_figures = run_step(system, redis, names, [rate, start, measure, end], pids, load)
                step_figures.update(rate=rate, subscribers=targets * readers, pinned=pinned, workers=workers)
                steps.append(step_figures)
                print(f"    {system.name} {rate:g}/s per target: {summary(step_figures)}", flush=True)
                missing = step_figures["missing"]
                if stop_early and (step_figures.get("p99_ms", 1e9) > P99_LIMIT_MS or missing > MAX_MISSING):
                    break
        finally:
            load.close()
    return steps


def run_step(
    system: System, redis: Any, names: list[str], step: list[float], pids: dict[str, int], load: Load
) -> dict[str, Any]:
    rate, start, measure, end = step
    # The publisher runs in its own process (waited for by a thread); this one samples the CPU around the window.
    result: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run() -> None:
        try:
            result.update(publish(system, redis, names, step, watched))
        except BaseException as exc:  # re-raised below, in this thread
            errors.append(exc)

    server_pids = process_tree(pids["server"])
    watched = {**{f"server{n}": p for n, p in enumerate(server_pids)}, **pids, "bench": os.getpid()}
    watched.pop("server")
    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(max(0.0, (measure - time.monotonic_ns()) / 1e9))
    first = sample_cpu(watched)
    time.sleep(max(0.0, (end - time.monotonic_ns()) / 1e9))
    cpu = cpu_between(first, sample_cpu(watched))
    thread.join((end - start) / 1e9 + 120)
    if errors:
        raise errors[0]
    counts, sent, latency = drained(load)
    in_window = sorted(lat for t, lat in zip(sent, latency, strict=True) if measure <= t < end)
    seconds = (end - measure) / 1e9
    subscribers_per_target = load.ready / len(names)
    expected = result["in_window"] * subscribers_per_target
    server_cpu = sum(cpu.get(f"server{n}", 0.0) for n in range(len(server_pids)))
    figures: dict[str, Any] = {
        "published_per_s": result["in_window"] / seconds,
        # Of the schedule: a publish path that cannot keep up (Channels' group_send) publishes less than offered.
        "published_fraction": result["in_window"] / (rate * len(names) * seconds),
        "deliveries_per_s": len(in_window) / seconds,
        "expected": expected,
        "delivered": len(in_window),
        "missing": 1 - len(in_window) / expected if expected else 0.0,
        "skipped_versions": counts["skipped"],
        "gaps": counts["gaps"],
        "out_of_order": counts["backwards"],
        "behind_latest": counts["behind"],
        "errors": counts["errors"],
        "publisher_lag_ms": result["max_lag_ms"],
        "server_cpu": server_cpu,
        "other_cpu": cpu.get("other", 0.0),
        # The load generator's own share: near 100% it, not the server, is the limit.
        "clients_cpu": cpu.get("clients", 0.0),
        "publisher_cpu": cpu.get("publisher", 0.0),
        "us_per_delivery": server_cpu / 100 * seconds / len(in_window) * 1e6 if in_window else None,
        "disturbed": cpu.get("other", 0.0) > DISTURBED,
    }
    if in_window:
        figures.update(p50_ms=percentile(in_window, 0.5), p99_ms=percentile(in_window, 0.99))
    return figures


def drained(load: Load) -> tuple[dict[str, Any], array.array[int], array.array[int]]:
    """What arrived for a step: reports every DRAIN_S after its end until one brings nothing (a system that is
    seconds behind still gets its late deliveries counted, as late), at most DRAIN_MAX_S."""
    counts, sent, latency = (
        {"skipped": 0, "gaps": [], "backwards": 0, "behind": 0, "errors": []},
        array.array("q"),
        array.array("q"),
    )
    deadline = time.monotonic() + DRAIN_MAX_S
    while time.monotonic() < deadline:
        time.sleep(DRAIN_S)
        more, more_sent, more_latency = load.report()
        sent.extend(more_sent)
        latency.extend(more_latency)
        for key in ("skipped", "backwards"):
            counts[key] += more[key]
        counts["gaps"] = (counts["gaps"] + more["gaps"])[:5]
        counts["errors"] = (counts["errors"] + more["errors"])[:20]
        counts["behind"] = more["behind"]
        if not more_sent:
            break
    return counts, sent, latency


def summary(figures: dict[str, Any]) -> str:
    text = (
        f"published {100 * figures['published_fraction']:.0f}%, {figures['deliveries_per_s']:,.0f} deliveries/s, "
        f"missing {100 * figures['missing']:.1f}%, "
        f"server {figures['server_cpu']:.0f}% of a core, clients {figures['clients_cpu']:.0f}%, "
        f"publisher {figures['publisher_cpu']:.0f}%, other {figures['other_cpu']:.0f}%"
    )
    if "p50_ms" in figures:
        text += f", p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms"
    return text + (" DISTURBED" if figures["disturbed"] else "")


def idle(system: System, redis: Any, log: Path, count: int, idle_s: float) -> dict[str, Any]:
    """`count` subscribers of one target: connect rate (bridge: + JWT subscribe + snapshot; peers: upgraded and
    joined), then RSS per connection and server CPU while nothing is published."""
    with server(system, redis.url, log) as (port, pid):
        pin(pid, SERVER_CORE)
        _names, connections = targets_of(system, port, 1)
        time.sleep(1.0)  # the server's own start-up work (imports, pools) out of the baseline
        before = rss_bytes(pid)
        load = Load(port, connections * count, system.is_bridge)
        try:
            time.sleep(2.0)  # settle: the last connections' buffers
            after = rss_bytes(pid)
            pids = {"server": pid, "redis": redis.process.pid, "clients": load.process.pid, "bench": os.getpid()}
            first = sample_cpu(pids)
            time.sleep(idle_s)
            cpu = cpu_between(first, sample_cpu(pids))
        finally:
            load.close()
    figures = {
        "subscribers": count,
        "ready": load.ready,
        "connects_per_s": load.ready / load.connect_s if load.connect_s else 0.0,
        "rss_per_connection_kb": (after - before) / count / 1024,
        "idle_cpu": cpu.get("server", 0.0),
        "other_cpu": cpu.get("other", 0.0),
        "disturbed": cpu.get("other", 0.0) > DISTURBED,
        "errors": load.errors,
    }
    print(
        f"    {system.name} x {count:,}: {figures['connects_per_s']:,.0f} connects/s, "
        f"{figures['rss_per_connection_kb']:.1f} KB per connection, idle CPU {figures['idle_cpu']:.1f}%"
        + (" DISTURBED" if figures["disturbed"] else ""),
        flush=True,
    )
    return figures


def official(
    system: System, redis: Any, log: Path, watchers: int, rate: float, warmup_s: float, window_s: float
) -> dict[str, Any]:
    """Scenario 5: one run watched by `watchers` official long-poll feeds, its metadata set `rate` times a second."""
    from bridge.runtime.access import run_access_token

    with server(system, redis.url, log) as (port, pid):
        pin(pid, SERVER_CORE)
        [run_id] = trigger_runs(port, system.secret, 1)
        load = Watchers(port, run_id, run_access_token(system.secret, run_id), watchers)
        try:
            if load.ready < watchers:
                raise RuntimeError(f"{load.ready} of {watchers} watching: {load.errors}")
            start = time.monotonic_ns() + 300_000_000
            measure = start + int(warmup_s * 1e9)
            end = measure + int(window_s * 1e9)
            pids = {"server": pid, "redis": redis.process.pid, "clients": load.process.pid}
            figures = run_step(system, redis, [run_id], [rate, start, measure, end], pids, load)
        finally:
            load.close()
    figures.update(rate=rate, subscribers=watchers, watchers=watchers)
    figures["us_per_watcher_update"] = figures["us_per_delivery"]
    print(f"    bridge long-poll, {watchers} watchers, {rate:g}/s: {summary(figures)}", flush=True)
    return figures


def bridge_streams(quick: bool, rates: list[float], *options: str) -> dict[str, Any]:
    """bench/streams.py (output streams, 500 x 2 readers unless `options` say otherwise, exactly-once in-order
    check) at `rates` chunks/s per stream: scenario 2 for the bridge, and scenario 5's SSE route."""
    out = Path(tempfile.mkdtemp(prefix="rb-bench-streams-")) / "streams.json"
    rates_arg = ",".join(f"{r:g}" for r in rates)
    command = [sys.executable, "bench/streams.py", "--delivery-only", "--rates", rates_arg, "--json", str(out)]
    command += [*options, *(["--quick"] if quick else [])]
    print(f"    bridge: {shlex.join(command)}", flush=True)
    subprocess.run(command, cwd=ROOT, check=True, timeout=600, stdout=subprocess.DEVNULL)
    try:
        figures: dict[str, Any] = json.loads(out.read_text())
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    return figures
