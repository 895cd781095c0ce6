"""Slow consumers: what 5% of stalled WebSocket clients cost the others' update latency.

    /work/main/.venv/bin/python bench/slow_consumers.py              # about 2 minutes: 2 rounds of both scenarios
    /work/main/.venv/bin/python bench/slow_consumers.py --rounds 4   # about 4 minutes
    /work/main/.venv/bin/python bench/slow_consumers.py --quick      # about 1 minute: 1 round

One bridge process (`realtime-bridge serve --tasks bench/slow_consumers.py`: memory backend, server
and worker in one process) and 1,000 WebSocket clients in this process (tests/support/lean_ws.py:
asyncio.Protocol, frames by hand, uvloop). Two runs of the same task, which sets the run's metadata
`t` (CLOCK_MONOTONIC, taken just before the change is stored) at a fixed rate:

- the measured run (`--rate`, 10/s, small frames): all 1,000 clients follow it; a client records
  (its receive time - `t`) per update frame, warm-up excluded;
- a heavy run (`--heavy-rate`, 5/s, each frame carrying `--pad` bytes, 256 KiB, in the run's payload):
  every 20th client (5%) follows it too, so its connection carries MBs.

Two scenarios, alternated for `--rounds`, with the same load on the server: `all-read` (every client
reads) and `stalled` (the 5% stop reading after their snapshots: transport paused, 4 KiB SO_RCVBUF;
their kernel buffers fill, a send to them blocks, and the server closes them with 4008 once one has
waited its 5 s grace). Reported: p50 / p99 / max of the other 950 clients' latency, the p99 ratio,
how many stalled clients the server had closed, and the CPU used. Every loop is bounded in count and
in time. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.harness import CpuWindow, bridge_env, check_bridge_source, free_port, percentile, wait_http  # noqa: E402
from bench.streams import run_async  # noqa: E402
from bridge import metadata, streams, task  # noqa: E402
from tests.support.lean_ws import Frame, LeanWebSocket, close_all  # noqa: E402

TASK_ID = "bench-slow-consumers"
SECRET = os.environ.setdefault("RB_BENCH_SECRET_KEY", "tr_bench_" + os.urandom(24).hex())
STALLED_EVERY = 20  # 5% follow the heavy run, and stall in the `stalled` scenario
STALLED_RECEIVE_BUFFER = 4096
CONNECTING_AT_ONCE = 100
SERVER_GRACE_SECONDS = 5.0  # the default slow_consumer_grace_seconds: a stalled client's send blocked this long
DRAIN_SECONDS = 10.0  # after the last update, the readers' last frames and the stalled clients' close


@task(id=TASK_ID)
async def updates(payload: dict[str, Any]) -> int:
    """Waits for "go" on its input stream, then sets metadata `t` (CLOCK_MONOTONIC) `count` times at `rate`/s."""
    await streams.input("go").once(timeout=120)
    count, rate = int(payload["count"]), float(payload["rate"])
    started = time.monotonic()
    for n in range(count):
        delay = started + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await metadata.set("t", time.monotonic())
    return count


@dataclass
class Client:
    """One page: the measured run's latencies; every 20th also follows the heavy run."""

    heavy: bool
    measured_run: list[str]  # shared: the measured run's topic, once known
    measure_from: list[float]  # shared: stamps before it are warm-up
    latencies: list[float] = field(default_factory=list)
    snapshots: int = 0
    subscribed: asyncio.Event = field(default_factory=asyncio.Event)
    completed: asyncio.Event = field(default_factory=asyncio.Event)
    stall: bool = False
    socket: LeanWebSocket | None = None

    def on_frame(self, frame: Frame) -> None:
        now = time.monotonic()
        if frame["type"] == "snapshot":
            self.snapshots += 1
            if self.snapshots == (2 if self.heavy else 1):
                self.subscribed.set()
                if self.stall:
                    assert self.socket is not None
                    self.socket.pause_reading()
        elif frame["type"] == "update" and frame["topic"] == self.measured_run[0]:
            run = frame["run"]
            stamp = run["metadata"].get("t")
            if stamp is not None and self.measure_from and stamp >= self.measure_from[0]:
                self.latencies.append(now - stamp)
            if run["status"] == "COMPLETED":
                self.completed.set()


async def scenario(port: int, stalled: bool, args: argparse.Namespace) -> dict[str, Any]:
    measured_run: list[str] = []
    measure_from: list[float] = []
    group = [Client(n % STALLED_EVERY == 0, measured_run, measure_from) for n in range(args.clients)]
    for client in group:
        client.stall = stalled and client.heavy
    auth = {"Authorization": f"Bearer {SECRET}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers=auth, timeout=30) as http:

        async def trigger(rate: float, pad: int) -> str:
            payload = {"count": int(rate * args.seconds), "rate": rate, "pad": "x" * pad}
            answer = await http.post(f"/api/v1/tasks/{TASK_ID}/trigger", json={"payload": payload})
            run_id: str = answer.raise_for_status().json()["id"]
            return run_id

        measured, heavy = await trigger(args.rate, 0), await trigger(args.heavy_rate, args.pad)
        measured_run.append(f"run:{measured}")
        connecting = asyncio.Semaphore(CONNECTING_AT_ONCE)

        async def join(client: Client) -> None:
            async with connecting:
                buffer = STALLED_RECEIVE_BUFFER if client.stall else None
                client.socket = await LeanWebSocket.connect(port, client.on_frame, receive_buffer=buffer)
                for n, run_id in enumerate([measured, heavy] if client.heavy else [measured]):
                    client.socket.send({"type": "subscribe", "id": f"s{n}", "feed": "run", "runId": run_id,
                                        "token": SECRET})  # fmt: skip
                await client.subscribed.wait()

        try:
            async with asyncio.timeout(120):
                await asyncio.gather(*(join(client) for client in group))
            cpu = CpuWindow()
            cpu.start()
            go = time.monotonic()
            measure_from.append(go + args.warmup)
            for run_id in (measured, heavy):
                answer = await http.post(f"/realtime/v1/streams/{run_id}/input/go", json={"data": True})
                answer.raise_for_status()
            others = [client for client in group if not client.heavy]
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.seconds + DRAIN_SECONDS):
                    await asyncio.gather(*(client.completed.wait() for client in others))
            cpu.stop()
            late = sum(not client.completed.is_set() for client in others)
            # The server lets go of a stalled client once a send to it has blocked for its grace; reading again,
            # the client finds its connection closed (4008, or no close frame when none could be written behind
            # the data it left unread).
            stalled_sockets = [client.socket for client in group if client.stall and client.socket is not None]
            for socket in stalled_sockets:
                socket.resume_reading()
            if stalled_sockets:
                await asyncio.wait([socket.closed for socket in stalled_sockets], timeout=SERVER_GRACE_SECONDS)
            closed = sum(socket.closed.done() for socket in stalled_sockets)
        finally:
            await close_all([client.socket for client in group if client.socket is not None])
    measured_latencies = [x for client in group if not client.heavy for x in client.latencies]
    return {
        "scenario": "stalled" if stalled else "all-read",
        "deliveries": len(measured_latencies),
        "late_readers": late,
        "p50_ms": percentile(measured_latencies, 50) * 1000,
        "p99_ms": percentile(measured_latencies, 99) * 1000,
        "max_ms": max(measured_latencies) * 1000,
        "stalled_closed": closed,
        "server_cores": cpu.cores("bridge"),
        "bench_cores": cpu.cores("bench"),
        "other_cores": cpu.cores("other"),
    }


def start_server(port: int) -> subprocess.Popen[bytes]:
    command = ["-m", "bridge.cli", "serve", "--port", str(port), "--tasks", str(Path(__file__).resolve())]
    server = subprocess.Popen(
        [sys.executable, *command],
        env=bridge_env(SECRET),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", 30)
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one round (--rounds 1)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of scenarios, alternated")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=10.0, help="changes per second of the measured run")
    parser.add_argument("--heavy-rate", type=float, default=5.0, help="changes per second of the heavy run")
    parser.add_argument("--pad", type=int, default=256 * 1024, help="bytes every heavy run frame carries")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long the tasks change their runs")
    parser.add_argument("--warmup", type=float, default=2.0)
    args = parser.parse_args()
    check_bridge_source(SECRET)
    results = []
    for _ in range(1 if args.quick else args.rounds):
        for stalled in (False, True):
            port = free_port()
            server = start_server(port)
            try:
                results.append(run_async(scenario(port, stalled, args)))
            finally:
                server.terminate()
                server.wait(30)
            print(results[-1], flush=True)
    base = [r["p99_ms"] for r in results if r["scenario"] == "all-read"]
    with_stalled = [r["p99_ms"] for r in results if r["scenario"] == "stalled"]
    print(
        f"\n{args.clients} clients following a run changed {args.rate:g}/s; every {STALLED_EVERY}th also one changed "
        f"{args.heavy_rate:g}/s with {args.pad:,} B frames; {args.seconds:g} s"
    )
    print("scenario   deliveries  late  p50 ms  p99 ms  max ms  stalled closed  server  bench  other (cores)")
    for r in results:
        print(
            f"{r['scenario']:<10} {r['deliveries']:>10}  {r['late_readers']:>4}  {r['p50_ms']:6.1f}  {r['p99_ms']:6.1f}"
            f"  {r['max_ms']:6.1f}  {r['stalled_closed']:>14}  {r['server_cores']:6.2f}  {r['bench_cores']:5.2f}"
            f"  {r['other_cores']:5.2f}"
        )
    ratios = [stalled_p99 / base_p99 for base_p99, stalled_p99 in zip(base, with_stalled, strict=True)]
    print(f"others' p99 with 5% stalled / without, per round: {', '.join(f'{r:.2f}' for r in ratios)}")
    print(f"median p99: {statistics.median(with_stalled) / statistics.median(base):.2f} (target < 1.10)")


if __name__ == "__main__":
    main()
