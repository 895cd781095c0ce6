"""What the Redis benchmarks share: their own redis-server and bridge processes serving a task file."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def bridge_env(secret: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a bridge process: this checkout's `bridge` package first (PYTHONPATH and the
    working directory are ROOT: `python -m` puts the working directory first on sys.path)."""
    return {**os.environ, "BRIDGE_SECRET_KEY": secret, "PYTHONPATH": str(ROOT), **(extra or {})}


def check_bridge_source(secret: str) -> None:
    """Fails unless a process started like the bridge's imports `bridge` from this checkout (a shared
    virtualenv may hold an editable install of another one)."""
    found = subprocess.run(
        [sys.executable, "-c", "import bridge; print(bridge.__file__)"],
        env=bridge_env(secret),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.strip()
    if not Path(found).resolve().is_relative_to(ROOT):
        sys.exit(f"bridge processes would import {found}, not this checkout ({ROOT})")


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """A redis-server on a free loopback port (never 6379), no persistence; yields its URL."""
    redis_bin = shutil.which("redis-server")
    if not redis_bin:
        sys.exit("this benchmark needs redis-server on PATH")
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        options = ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp]
        redis = subprocess.Popen([redis_bin, *options], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while True:  # bounded: 10 s
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("redis-server did not start within 10 s")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            redis.terminate()
            redis.wait(10)


@contextlib.contextmanager
def bridge_process(
    redis_url: str, task_file: str, secret: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """`realtime-bridge serve --redis-url ... --tasks task_file` (server + worker), with `env` added to its
    environment; yields once it answers /healthz. Stopped with SIGTERM on exit (a graceful stop: its
    worker parks waiting runs and hands executing ones back)."""
    check_bridge_source(secret)
    http_port = free_port()
    command = ["serve", "--port", str(http_port), "--redis-url", redis_url, "--tasks", task_file]
    bridge = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", *command],
        env=bridge_env(secret, env),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_http(f"http://127.0.0.1:{http_port}/healthz", 30)
        yield bridge
    finally:
        bridge.terminate()
        bridge.wait(40)


@contextlib.contextmanager
def redis_and_bridge(task_file: str, secret: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """A redis-server and one bridge process serving `task_file` on it; yields the Redis URL."""
    with redis_server() as redis_url, bridge_process(redis_url, task_file, secret, env):
        yield redis_url


def _process_ticks() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, name, utime + stime in clock ticks), for every process readable in /proc."""
    found: dict[int, tuple[int, str, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                head, _, tail = stat.read().rpartition(b")")
        except OSError:
            continue
        fields = tail.split()
        name = head.partition(b"(")[2].decode(errors="replace")
        found[int(entry)] = (int(fields[1]), name, int(fields[11]) + int(fields[12]))
    return found


class CpuWindow:
    """The CPU used between `start()` and `stop()`, in seconds of CPU: by this process (`bench`), by its
    children by name (`python`: the bridge processes, `redis-server`), and by every other process on
    the machine (`other`: the noise)."""

    def __init__(self) -> None:
        self._before: dict[int, tuple[int, str, int]] = {}
        self._started = 0.0
        self.seconds = 0.0
        self.used: dict[str, float] = {}

    def start(self) -> None:
        self._before, self._started = _process_ticks(), time.monotonic()

    def stop(self) -> None:
        after, self.seconds = _process_ticks(), time.monotonic() - self._started
        me, hz = os.getpid(), os.sysconf("SC_CLK_TCK")
        used: dict[str, float] = {"bench": 0.0, "other": 0.0}
        for pid, (ppid, name, ticks) in after.items():
            spent = (ticks - self._before.get(pid, (ppid, name, 0))[2]) / hz
            key = "bench" if pid == me else ("bridge" if name == "python" else name) if ppid == me else "other"
            used[key] = used.get(key, 0.0) + spent
        self.used = used

    def cores(self, key: str) -> float:
        return self.used.get(key, 0.0) / self.seconds if self.seconds else 0.0
