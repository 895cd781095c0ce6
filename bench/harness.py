"""What the Redis benchmarks share: their own redis-server and one bridge process serving a task file."""

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


@contextlib.contextmanager
def redis_and_bridge(task_file: str, secret: str) -> Iterator[str]:
    """A redis-server on a free loopback port (never 6379) and `realtime-bridge serve --tasks task_file`
    on it; yields the Redis URL. Both are stopped on exit."""
    redis_bin = shutil.which("redis-server")
    if not redis_bin:
        sys.exit("this benchmark needs redis-server on PATH")
    redis_port, http_port = free_port(), free_port()
    with tempfile.TemporaryDirectory() as tmp:
        options = ["--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        redis = subprocess.Popen([redis_bin, *options, "--dir", tmp], stdout=subprocess.DEVNULL)
        bridge: subprocess.Popen[bytes] | None = None
        try:
            redis_url = f"redis://127.0.0.1:{redis_port}/0"
            command = ["serve", "--port", str(http_port), "--redis-url", redis_url, "--tasks", task_file]
            bridge = subprocess.Popen(
                [sys.executable, "-m", "bridge.cli", *command],
                env={**os.environ, "BRIDGE_SECRET_KEY": secret, "PYTHONPATH": str(ROOT)},
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_http(f"http://127.0.0.1:{http_port}/healthz", 30)
            yield redis_url
        finally:
            for process in (bridge, redis):
                if process is not None:
                    process.terminate()
                    process.wait(10)
