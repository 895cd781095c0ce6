"""The results file of `python -m bench` (markdown: one table per scenario, ratios bridge / peer, issue 14's
targets hit or missed, the machine, the command) and the README's Performance section between its markers."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"


def versions(python: str, packages: list[str]) -> str:
    code = (
        "import importlib.metadata as m\n"
        f"for p in {packages!r}:\n"
        "    try: print(p, m.version(p))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    found = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60, check=False).stdout
    return ", ".join(found.splitlines())


def machine(python: str, peers_python: str | None) -> str:
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        model = next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), "?")
    redis = subprocess.run(
        [shutil.which("redis-server") or "redis-server", "--version"], capture_output=True, text=True, check=False
    ).stdout.split()
    redis_version = next((word[2:] for word in redis if word.startswith("v=")), "?")
    text = (
        f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, Python {platform.python_version()}, "
        f"Redis {redis_version}; {versions(python, ['uvicorn', 'starlette', 'websockets', 'uvloop', 'redis'])}"
    )
    if peers_python:
        text += f"; peers: {versions(peers_python, ['django', 'channels', 'channels_redis', 'broadcaster'])}"
    return text


def number(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def clean_max(steps: list[dict[str, Any]]) -> float:
    """The highest deliveries/s of a step with p99 <= 100 ms and at most 1% missing (0 if none)."""
    clean = [
        s["deliveries_per_s"]
        for s in steps
        if s.get("p99_ms", 1e9) <= 100 and s["missing"] <= 0.01 and s.get("published_fraction", 1.0) >= 0.99
    ]
    return max(clean, default=0.0)


def ratio(ours: float | None, theirs: float | None) -> str:
    return f"{ours / theirs:.2f}x" if ours and theirs else "-"


def step_table(results: dict[str, list[dict[str, Any]]], missing_word: str) -> list[str]:
    lines = [
        f"| system | offered/s | published | delivered/s | {missing_word} | p50 ms | p99 ms | server CPU | us/delivery "
        "| load CPU | other |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for system, steps in results.items():
        for s in steps:
            mark = " DISTURBED" if s.get("disturbed") else ""
            lines.append(
                f"| {system} | {number(s['offered_per_s'])} | {100 * s.get('published_fraction', 1.0):.0f}% | "
                f"{number(s['deliveries_per_s'])} | "
                f"{100 * s['missing']:.1f}% | {number(s.get('p50_ms'), 2)} | {number(s.get('p99_ms'), 1)} | "
                f"{s['server_cpu']:.0f}% | {number(s.get('us_per_delivery'), 1)} | {load_cpu(s)} | "
                f"{s['other_cpu']:.0f}%{mark} |"
            )
    return lines


def failed(size: dict[str, Any]) -> str:
    count = size["subscribers"] - size["ready"]
    return f"{count:,} ({size['errors'][0]})" if count and size["errors"] else f"{count:,}"


def load_cpu(step: dict[str, Any]) -> str:
    """Clients + publisher, % of a core (bench/streams.py's steps do not say)."""
    if "clients_cpu" not in step:
        return "-"
    return f"{step['clients_cpu']:.0f}% + {step['publisher_cpu']:.0f}%"


def render(results: dict[str, Any]) -> str:
    out = [
        f"# `python -m bench`, {results['date']}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {results['machine']}. Server pinned to core 0, clients + publisher + Redis on core 1. "
        "`other`: the CPU of every other process on the machine during the window (% of one core); above 15% the "
        "window is marked DISTURBED. `load CPU`: the clients' and the publisher's processes (near 100%, the load "
        "generator is the limit, not the server).",
        "",
    ]
    out += [f"- {note}" for note in results["notes"]] + ([""] if results["notes"] else [])
    fanout = results.get("fanout") or {}
    if fanout:
        out += [
            "## 1. Run feed: 1 run x 1,000 subscribers, ~100-byte message, rate stepped",
            "",
            "Stepped until p99 > 100 ms or > 1% of the deliveries missing (bridge: versions coalesced by design; "
            "peers: lost or still queued after the step's drain). `published`: the share of the schedule the "
            "publisher got out (bridge: SDK metadata updates; Channels: `group_send`); `missing` is of what was "
            "published.",
            "",
            *step_table(fanout, "missing"),
            "",
            "| system | highest delivered/s with p99 <= 100 ms, <= 1% missing | bridge / system |",
            "|---|---|---|",
        ]
        bridge_max = clean_max(fanout.get("bridge", []))
        for system, steps in fanout.items():
            out.append(f"| {system} | {number(clean_max(steps))} | {ratio(bridge_max, clean_max(steps))} |")
        out.append("")
    streams = results.get("streams") or {}
    if streams:
        out += [
            "## 2. Token streams: 500 runs x 2 readers (bridge: output streams; peers: 500 channels x 2)",
            "",
            *step_table(streams, "missing"),
            "",
        ]
        exact = results.get("streams_exact")
        if exact:
            out += [f"Bridge exactly-once in-order check: {exact}.", ""]
    idle = results.get("idle") or {}
    if idle:
        out += [
            "## 3. Idle subscribers, and 4. connects per second",
            "",
            "Connects/s: bridge = WebSocket upgrade + JWT-verified `subscribe` + first snapshot; peers = upgrade "
            "(the group or channel joined before the 101). 100 connecting at once.",
            "",
            "| system | subscribers | failed to connect | RSS per connection | idle server CPU | connects/s | other |",
            "|---|---|---|---|---|---|---|",
        ]
        for system, sizes in idle.items():
            for s in sizes:
                mark = " DISTURBED" if s.get("disturbed") else ""
                out.append(
                    f"| {system} | {s['subscribers']:,} | {failed(s)} | {s['rss_per_connection_kb']:.1f} KB | "
                    f"{s['idle_cpu']:.1f}% "
                    f"| {number(s['connects_per_s'])} | {s['other_cpu']:.0f}%{mark} |"
                )
        out.append("")
    watched, sse = results.get("official"), results.get("official_sse")
    if watched or sse:
        out += ["## 5. The official HTTP feeds: the long-poll run feed and the SSE stream route (bridge only)", ""]
    if watched:
        out += [
            f"One run watched by {watched['watchers']:,} Electric long-polls (`GET /realtime/v1/runs/<id>`, then "
            "`live=true` with the handle, offset and cursor, as @trigger.dev/react-hooks polls), its metadata set "
            f"{watched['rate']:g} times a second. A poll answers with the latest state: versions in between are "
            "coalesced by design.",
            "",
            "| watchers | updates/s | delivered/s | coalesced | p50 ms | p99 ms | server CPU | us per watcher update "
            "| load CPU | other |",
            "|---|---|---|---|---|---|---|---|---|---|",
            f"| {watched['watchers']:,} | {watched['rate']:g} | {number(watched['deliveries_per_s'])} | "
            f"{100 * watched['missing']:.1f}% | {number(watched.get('p50_ms'), 1)} | "
            f"{number(watched.get('p99_ms'), 1)} | "
            f"{watched['server_cpu']:.0f}% | {number(watched.get('us_per_delivery'), 1)} | {load_cpu(watched)} | "
            f"{watched['other_cpu']:.0f}%"
            f"{' DISTURBED' if watched.get('disturbed') else ''} |",
            "",
        ]
    if sse:
        out += [
            "The SSE stream route (`GET /realtime/v1/streams/<run>/<key>`, as the official client reads output "
            f"streams), bench/streams.py `--transport sse`: {results['official_sse_exact']}.",
            "",
            *step_table({"bridge SSE": sse}, "missing"),
            "",
        ]
    if "workers" in results:
        out += ["## 6. 1 vs 2 server processes", "", results["workers"], ""]
    out += ["## Issue 14's targets", "", "| target | measured | |", "|---|---|---|"]
    out += [f"| {target} | {measured} | {verdict} |" for target, measured, verdict in targets(results)]
    return "\n".join(out) + "\n"


def targets(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    fanout = results.get("fanout") or {}
    bridge = fanout.get("bridge")
    if bridge:
        best = clean_max(bridge)
        at = next((s for s in bridge if s["deliveries_per_s"] == best), None)
        cost = at.get("us_per_delivery") if at else None
        rows.append(
            (
                "run feed >= 100,000 deliveries/s, p99 <= 100 ms, no coalescing, <= 8 us/delivery",
                f"{number(best)}/s at {number(cost, 1)} us",
                hit(best >= 100_000 and cost is not None and cost <= 8),
            )
        )
        if "handroll" in fanout:
            theirs = clean_max(fanout["handroll"])
            verdict = hit(best > theirs) if best or theirs else "no clean step: not decided"
            rows.append(("ahead of the hand-roll", f"{number(best)} vs {number(theirs)}/s", verdict))
        if "channels" in fanout:
            ours = min((s["us_per_delivery"] for s in bridge if s.get("us_per_delivery")), default=None)
            theirs_cost = min(
                (s["us_per_delivery"] for s in fanout["channels"] if s.get("us_per_delivery")), default=None
            )
            factor = theirs_cost / ours if ours and theirs_cost else 0.0
            rows.append(
                (
                    ">= 30x Channels' deliveries at equal CPU",
                    f"{factor:.1f}x (server CPU per delivery)",
                    hit(factor >= 30) if factor else "Channels delivered nothing in its windows: not decided",
                )
            )
    streams = (results.get("streams") or {}).get("bridge")
    if streams:
        top = max(streams, key=lambda s: s["offered_per_s"])
        ok = (
            top["deliveries_per_s"] >= 0.99 * 30_000
            and top.get("p50_ms", 1e9) <= 2
            and top.get("p99_ms", 1e9) <= 10
            and results.get("streams_exact", "").startswith("yes")
        )
        rows.append(
            (
                "token streams 30,000/s, p50 <= 2 ms, p99 <= 10 ms, exactly once in order",
                f"{number(top['deliveries_per_s'])}/s, p50 {number(top.get('p50_ms'), 2)}, "
                f"p99 {number(top.get('p99_ms'), 1)} ms",
                hit(ok),
            )
        )
    sizes = (results.get("idle") or {}).get("bridge")
    if sizes:
        top = max(sizes, key=lambda s: s["subscribers"])
        rows.append(
            (
                "10,000 idle subscribers at <= 20 KB each, < 2% CPU",
                f"{top['subscribers']:,}: {top['rss_per_connection_kb']:.1f} KB, {top['idle_cpu']:.1f}%",
                hit(top["rss_per_connection_kb"] <= 20 and top["idle_cpu"] < 2)
                if top["subscribers"] >= 10_000
                else "not run at 10,000 (the full run is)",
            )
        )
        rate = max(s["connects_per_s"] for s in sizes)
        rows.append((">= 2,000 JWT connect + subscribe per second", f"{rate:,.0f}/s", hit(rate >= 2000)))
    if "workers_ratio" in results:
        value = results["workers_ratio"]
        rows.append(("2 processes deliver >= 1.8x one", f"{value:.2f}x", hit(value >= 1.8)))
    return rows


def hit(ok: bool) -> str:
    return "**hit**" if ok else "**missed**"


def update_readme(readme: Path, results: dict[str, Any], results_md: str, png: str | None) -> None:
    """Replaces what is between the markers with the scenario tables and the targets of `results_md`."""
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme} has no {BEGIN} ... {END} markers")
    body = results_md.split("\n", 1)[1].strip()  # the title goes: the README's section has its own
    body = re.sub(r"^## ", "### ", body, flags=re.MULTILINE)  # under the README's "## Performance"
    image = f"\n\n![python -m bench, {results['date']}]({png})" if png else ""
    generated = (
        f"{BEGIN}\n<!-- written by `python -m bench --update-readme`: do not edit by hand -->\n\n{body}{image}\n{END}"
    )
    start, end = text.index(BEGIN), text.index(END) + len(END)
    readme.write_text(text[:start] + generated + text[end:])
