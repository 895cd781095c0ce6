"""`python -m bench`: every scenario of issue 14, the bridge side by side with its peers, in one command.

    /work/main/.venv/bin/python -m bench                  # the full run (~15 min)
    /work/main/.venv/bin/python -m bench --quick          # < 5 min: fewer, shorter steps
    /work/main/.venv/bin/python -m bench --smoke          # ~15 s: bridge + hand-roll, one short step of scenario 1
    ... --only fanout,idle --systems bridge,handroll --update-readme

It starts its own redis-server on a free loopback port, each system's server in turn (pinned to core 0), and the
load (clients, publisher, Redis) on core 1; Channels and broadcaster run in bench/.venv-peers, made on first use.
Writes bench/results/<date>.md and .png (--out-dir to write elsewhere); --update-readme rewrites the README's
Performance section between its markers. Every loop is bounded in count and in time. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.harness import ROOT, check_bridge_source
from bench.streams import LOAD_CORE, SECRET, pin
from bench.systems import ALL, PEERS_PYTHON, System, has_module, peers_python

BROADCASTER_NOTE = (
    "broadcaster 0.3.1 has two races that lose subscribers, as its figures show: (1) on redis-py 8.1 its Redis "
    "listener can enter `pubsub.listen()` before the first SUBSCRIBE lands, leave it, clear its ready event and "
    "wait forever (then nothing is delivered at all: a lone subscribe -> publish got nothing, checked by hand); "
    "(2) `Broadcast.subscribe` awaits the backend's SUBSCRIBE before registering the subscriber's queue, so "
    "subscribers of one channel arriving together overwrite each other's queue and all but one get nothing "
    "(50% missing with 2 subscribers per channel, ~10% of 1,000 connecting 100 at once). Measured as its README "
    "shows it, without a workaround"
)
SCENARIOS = ("fanout", "streams", "idle", "connects", "official", "workers")
OPEN_FILES = 12_000  # per process: 10,000 connections (the clients' process and the server each hold one end)


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """Subscribers and rates of scenario 1, the steps' warm-up and window (s), scenario 2's rates, idle sizes and
    window (s), scenario 5's watchers and updates/s and SSE streams (2 readers each, 10 chunks/s)."""
    if args.smoke:
        return dict(
            subscribers=20,
            rates=[10.0],
            warmup=1.0,
            window=2.0,
            stream_rates=[10.0],
            idle_sizes=[100],
            idle_s=1.0,
            watchers=10,
            watch_rate=5.0,
            sse_streams=10,
        )
    if args.quick:
        return dict(
            subscribers=1000,
            rates=[20.0, 50.0, 100.0],
            warmup=1.5,
            window=3.0,
            stream_rates=[10.0, 30.0],
            idle_sizes=[1000, 5000],
            idle_s=3.0,
            watchers=200,
            watch_rate=10.0,
            sse_streams=100,
        )
    return dict(
        subscribers=1000,
        rates=[10.0, 20.0, 50.0, 100.0, 150.0, 200.0, 300.0],
        warmup=3.0,
        window=8.0,
        stream_rates=[10.0, 30.0],
        idle_sizes=[1000, 5000, 10000],
        idle_s=10.0,
        watchers=1000,
        watch_rate=10.0,
        sse_streams=500,
    )


def offered(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for step in steps:
        step["offered_per_s"] = step["rate"] * step["subscribers"]  # rate: messages per target per second
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer, shorter steps: under 5 minutes")
    parser.add_argument("--smoke", action="store_true", help="bridge + hand-roll, one short step of scenario 1")
    parser.add_argument("--only", help=f"scenarios, comma-separated: {','.join(SCENARIOS)}")
    parser.add_argument("--systems", help=f"comma-separated: {','.join(ALL)}")
    parser.add_argument("--update-readme", action="store_true", help="rewrite README.md's Performance section")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="no run: write the .md and .png again from a results .json"
    )
    args = parser.parse_args()
    if args.render:
        args.out_dir = args.render.parent
        write(args, json.loads(args.render.read_text()), str(PEERS_PYTHON) if PEERS_PYTHON.exists() else None)
        return
    chosen = (args.only or ("fanout" if args.smoke else ",".join(SCENARIOS))).split(",")
    names = (args.systems or ("bridge,handroll" if args.smoke else ",".join(ALL))).split(",")
    for name in [*chosen, *names]:
        if name not in (*SCENARIOS, *ALL):
            parser.error(f"unknown scenario or system: {name}")
    config = settings(args)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(soft, OPEN_FILES), hard), hard))
    pin(0, LOAD_CORE)
    check_bridge_source(SECRET)

    notes: list[str] = []
    peers = None
    if any(name in ("channels", "broadcaster") for name in names):
        peers = peers_python(notes)
    systems: list[System] = []
    for name in names:
        python = sys.executable if name in ("bridge", "handroll") else peers
        if python is None:
            notes.append(f"{name}: left out (no bench/.venv-peers)")
        elif name == "broadcaster" and not has_module(python, "broadcaster"):
            notes.append("broadcaster: left out (it did not install in bench/.venv-peers)")
        else:
            systems.append(System(name, python, SECRET))
            if name == "broadcaster":
                notes.append(BROADCASTER_NOTE)
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < OPEN_FILES:
        notes.append(f"open files limited to {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}")

    date = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d")
    results: dict[str, Any] = {
        "date": date,
        "command": "python -m bench " + shlex.join(sys.argv[1:]),
        "machine": report.machine(sys.executable, peers),
        "notes": notes,
    }
    from bridge.testing.redis_server import start_redis_server

    redis = start_redis_server()
    pin(redis.process.pid, LOAD_CORE)
    logs = Path(tempfile.mkdtemp(prefix="rb-bench-"))
    try:

        def attempt(what: str, measure: Callable[[], Any]) -> Any:
            """One system's scenario; a failure is a line in the results, and the others still run."""
            try:
                return measure()
            except Exception as exc:
                notes.append(f"{what} failed: {exc!r}"[:600])
                print(f"    {what} failed: {exc!r}", flush=True)
                return None

        if "fanout" in chosen:
            print("scenario 1: run feed fan-out", flush=True)
            results["fanout"] = {}
            for s in systems:
                steps = attempt(
                    f"scenario 1, {s.name}",
                    partial(
                        scenarios.fanout,
                        s,
                        redis,
                        logs / f"{s.name}.log",
                        targets=1,
                        readers=config["subscribers"],
                        rates=config["rates"],
                        warmup_s=config["warmup"],
                        window_s=config["window"],
                    ),
                )
                if steps:
                    results["fanout"][s.name] = offered(steps)
        if "streams" in chosen:
            print("scenario 2: 500 runs x 2 readers", flush=True)
            results["streams"] = {}
            for s in systems:
                if s.is_bridge:
                    found = attempt("scenario 2, bridge (bench/streams.py)", partial(bridge_streams, args, config))
                    if found:
                        results["streams"]["bridge"], results["streams_exact"] = found
                    continue
                steps = attempt(
                    f"scenario 2, {s.name}",
                    partial(
                        scenarios.fanout,
                        s,
                        redis,
                        logs / f"{s.name}.log",
                        targets=500,
                        readers=2,
                        rates=config["stream_rates"],
                        warmup_s=config["warmup"],
                        window_s=config["window"],
                        stop_early=False,
                    ),
                )
                if steps:
                    results["streams"][s.name] = offered(steps)
        if "idle" in chosen or "connects" in chosen:
            print("scenarios 3 and 4: idle subscribers, connects/s", flush=True)
            results["idle"] = {}
            for s in systems:
                sizes = [
                    attempt(
                        f"scenario 3, {s.name} x {n}",
                        partial(scenarios.idle, s, redis, logs / f"{s.name}.log", n, config["idle_s"]),
                    )
                    for n in config["idle_sizes"]
                ]
                if any(sizes):
                    results["idle"][s.name] = [size for size in sizes if size]
        bridge = next((s for s in systems if s.is_bridge), None)
        if "official" in chosen and bridge:
            print("scenario 5: the official long-poll run feed", flush=True)
            results["official"] = attempt(
                "scenario 5, bridge long-poll",
                partial(
                    scenarios.official,
                    bridge,
                    redis,
                    logs / "bridge.log",
                    config["watchers"],
                    config["watch_rate"],
                    config["warmup"],
                    config["window"],
                ),
            )
            print("scenario 5: the SSE stream route (bench/streams.py --transport sse)", flush=True)
            sse_options = ("--transport", "sse", "--streams", str(config["sse_streams"]))
            sse = partial(bridge_streams, args, config, *sse_options, rates=[10.0])
            found = attempt("scenario 5, bridge SSE route", sse)
            if found:
                results["official_sse"], results["official_sse_exact"] = found
        if "workers" in chosen and any(s.is_bridge for s in systems):
            results["workers"] = workers(args, config, redis, logs, results)
    finally:
        redis.stop()
    write(args, results, peers)


def bridge_streams(
    args: argparse.Namespace, config: dict[str, Any], *options: str, rates: list[float] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """bench/streams.py's figures as steps of the results, and its exactly-once verdict."""
    figures = scenarios.bridge_streams(args.quick or args.smoke, rates or config["stream_rates"], *options)
    steps = []
    for step in figures["steps"]:
        cpu = step["cpu_percent"]
        delivered = step["deliveries_per_s"] * step["window_s"]
        steps.append(
            {
                "offered_per_s": step["target_deliveries_per_s"],
                "deliveries_per_s": step["deliveries_per_s"],
                "missing": max(0.0, 1 - step["delivered_fraction"]),
                "p50_ms": step.get("p50_ms"),
                "p99_ms": step.get("p99_ms"),
                "server_cpu": cpu.get("server", 0.0),
                "other_cpu": cpu.get("other", 0.0),
                "us_per_delivery": cpu.get("server", 0.0) / 100 * step["window_s"] / delivered * 1e6
                if delivered
                else None,
                "disturbed": cpu.get("other", 0.0) > scenarios.DISTURBED,
            }
        )
    delivery = figures["delivery"]
    exact = delivery["delivered"] == delivery["expected"] and delivery["out_of_order"] == 0
    state = "yes" if exact else "incomplete" if delivery["out_of_order"] == 0 else "NO"
    verdict = (
        f"{state}: {delivery['delivered']:,} of {delivery['expected']:,} chunk deliveries arrived before the clients "
        f"stopped (2 s after the last append), {delivery['out_of_order']} out of order or doubled "
        f"(bench/streams.py, {'the SSE route' if 'sse' in options else 'WebSocket `stream` feed'})"
    )
    return steps, verdict


def workers(args: argparse.Namespace, config: dict[str, Any], redis: Any, logs: Path, results: dict[str, Any]) -> str:
    bridge = System("bridge", sys.executable, SECRET)
    print("scenario 6: bridge with 2 server processes", flush=True)
    one = results.get("fanout", {}).get("bridge") or offered(
        scenarios.fanout(
            bridge,
            redis,
            logs / "bridge.log",
            targets=1,
            readers=config["subscribers"],
            rates=config["rates"],
            warmup_s=config["warmup"],
            window_s=config["window"],
        )
    )
    two = offered(
        scenarios.fanout(
            bridge,
            redis,
            logs / "bridge2.log",
            targets=1,
            readers=config["subscribers"],
            rates=[*config["rates"], config["rates"][-1] * 2],
            warmup_s=config["warmup"],
            window_s=config["window"],
            workers=2,
        )
    )
    results["workers_ratio"] = report.clean_max(two) / (report.clean_max(one) or 1.0)
    results.setdefault("fanout", {})["bridge x2"] = two
    return (
        f"`serve --workers 2` (not pinned: both cores, sharing core 1 with the load): highest clean "
        f"{report.clean_max(two):,.0f} deliveries/s against {report.clean_max(one):,.0f} with one process "
        f"({results['workers_ratio']:.2f}x); its steps are in scenario 1's table as `bridge x2`."
    )


def write(args: argparse.Namespace, results: dict[str, Any], peers: str | None) -> None:
    args.out_dir.mkdir(parents=True, exist_ok=True)
    stem = args.out_dir / results["date"]
    data = stem.with_suffix(".json")
    if not args.render:
        data.write_text(json.dumps(results, indent=1))
    png: str | None = None
    plotter = peers or (sys.executable if has_module(sys.executable, "matplotlib") else None)
    if plotter and (results.get("fanout") or results.get("streams")):
        drawn = subprocess.run(
            [plotter, str(ROOT / "bench" / "plot.py"), str(data), str(stem.with_suffix(".png"))],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if drawn.returncode == 0:
            png = stem.with_suffix(".png").name
        else:
            results["notes"].append(f"no plot: {drawn.stderr.strip()[-300:]}")
    elif not plotter:
        results["notes"].append("no plot: matplotlib is in neither bench/.venv-peers nor this interpreter")
    markdown = report.render(results)
    if png:
        markdown += f"\n![deliveries/s, p50 and p99 per system per step]({png})\n"
    stem.with_suffix(".md").write_text(markdown)
    print(f"\nwrote {stem.with_suffix('.md')}" + (f" and {png}" if png else ""), flush=True)
    if args.update_readme:
        relative = f"bench/results/{png}" if png and args.out_dir.resolve() == (ROOT / "bench" / "results") else None
        report.update_readme(ROOT / "README.md", results, markdown.split("\n![")[0], relative)
        print("updated README.md's Performance section", flush=True)


if __name__ == "__main__":
    main()
