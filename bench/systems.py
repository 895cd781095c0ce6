"""How `python -m bench` starts each system's server and subscribes to it. The bridge and the hand-roll run on
the project's interpreter (same uvicorn, Starlette, redis-py as the bridge); Channels and broadcaster on
bench/.venv-peers, created on first use."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.harness import ROOT, bridge_env, free_port
from bench.load import Connection

PEERS_VENV = ROOT / "bench" / ".venv-peers"
PEERS_PYTHON = PEERS_VENV / "bin" / "python"
PEERS_REQUIREMENTS = [
    "django>=5.2,<6",
    "channels>=4.3,<5",
    "channels_redis>=4.3,<5",
    "uvicorn[standard]==0.55.0",
    "starlette==1.10.0",
    "redis==8.1.0",
    "matplotlib>=3.8",
]
UVICORN = [
    "--host",
    "127.0.0.1",
    "--no-access-log",
    "--loop",
    "uvloop",
    "--http",
    "httptools",
    "--log-level",
    "warning",
]
ALL = ("bridge", "handroll", "channels", "broadcaster")


@dataclass
class System:
    name: str
    python: str
    secret: str

    @property
    def is_bridge(self) -> bool:
        return self.name == "bridge"

    def command(self, port: int, redis_url: str, workers: int = 1) -> list[str]:
        if self.is_bridge:
            serve = ["serve", "--port", str(port), "--redis-url", redis_url, "--log-level", "warning"]
            serve += ["--shutdown-grace", "0.5"]  # its runs wait on input forever: no grace to wait out
            if workers > 1:
                serve += ["--workers", str(workers)]
            return [self.python, "-m", "bridge.cli", *serve, "--tasks", "bench/tasks.py"]
        app = {
            "handroll": "bench.peers.handroll:app",
            "channels": "bench.peers.channels_app.asgi:application",
            "broadcaster": "bench.peers.broadcast:app",
        }[self.name]
        return [self.python, "-m", "uvicorn", app, "--port", str(port), *UVICORN, "--ws", "websockets-sansio"]

    def env(self, redis_url: str) -> dict[str, str]:
        return bridge_env(self.secret, {"BENCH_REDIS_URL": redis_url})

    def connection(self, target: str, token: str = "") -> Connection:
        """One subscriber of `target` (a run id for the bridge, a channel or group name for the peers)."""
        if self.is_bridge:
            subscribe = {"type": "subscribe", "id": "s", "feed": "run", "runId": target, "token": token}
            return Connection("/ws", [orjson.dumps(subscribe)])
        return Connection(f"/ws/{target}")


def peers_python(log: list[str]) -> str | None:
    """bench/.venv-peers' interpreter, made on first use with pip; None (and why, in `log`) if it cannot be."""
    if PEERS_PYTHON.exists():
        return str(PEERS_PYTHON)
    base = getattr(sys, "_base_executable", sys.executable)
    try:
        subprocess.run([base, "-m", "venv", str(PEERS_VENV)], check=True, timeout=300, capture_output=True)
        pip = [str(PEERS_PYTHON), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, *PEERS_REQUIREMENTS], check=True, timeout=900, capture_output=True)
    except (subprocess.SubprocessError, OSError) as exc:
        log.append(f"bench/.venv-peers could not be made: {exc}")
        return None
    broadcaster = subprocess.run([*pip, "broadcaster"], timeout=300, capture_output=True, text=True, check=False)
    if broadcaster.returncode:
        log.append(f"broadcaster did not install: {broadcaster.stderr.strip()[-300:]}")
    return str(PEERS_PYTHON)


def has_module(python: str, module: str) -> bool:
    found = subprocess.run([python, "-c", f"import {module}"], capture_output=True, timeout=60, check=False)
    return found.returncode == 0


def wait_port(port: int, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # polling a process just spawned: no event to await
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listened on {port} within {timeout:.0f} s")


@contextlib.contextmanager
def server(system: System, redis_url: str, log_path: Path, workers: int = 1) -> Iterator[tuple[int, int]]:
    """The system's server on a free port; yields (port, pid). Its output goes to `log_path`."""
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            system.command(port, redis_url, workers), env=system.env(redis_url), cwd=ROOT, stdout=log, stderr=log
        )
        try:
            wait_port(port, process, 60)  # uvicorn listens once the app's start-up (lifespan) is done
            yield port, process.pid
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (a server with --workers forks its processes)."""
    found = [pid]
    for child_pid in found:  # grows while walked: bounded by the machine's processes
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{child_pid}/task"):
                with open(f"/proc/{child_pid}/task/{task}/children") as children:
                    found.extend(int(c) for c in children.read().split() if int(c) not in found)
    return found


def rss_bytes(pid: int) -> int:
    total = 0
    for member in process_tree(pid):
        with contextlib.suppress(OSError), open(f"/proc/{member}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total
