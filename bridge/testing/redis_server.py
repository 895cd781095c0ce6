"""A throwaway `redis-server` on a free loopback port, owned by the test run (never the shared one)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]
    directory: str
    persistent: bool = False  # append-only file, fsync on every write: a restart keeps every acknowledged write
    options: tuple[str, ...] = ()  # more redis-server arguments (a cluster node's)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _end_process(self, *, kill: bool = False) -> None:
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def stop(self) -> None:
        self._end_process()
        shutil.rmtree(self.directory, ignore_errors=True)

    def restart(self) -> None:
        """Stops and starts the server on the same port. Without persistence nothing is kept (like a crash);
        a persistent server comes back with every write it acknowledged."""
        self.halt()
        self.start_again()

    def halt(self, *, kill: bool = False) -> None:
        """Stops the server for `start_again` (a persistent one keeps its data meanwhile): with `kill`, by
        SIGKILL (no shutdown code runs), else by SIGTERM (Redis shuts down cleanly)."""
        self._end_process(kill=kill)
        if not self.persistent:
            self.stop()

    def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed; the directory stays for `start_again` (a cluster node's config)."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def start_again(self) -> None:
        """Starts a halted server on the same port, in its directory when it kept it (persistent data, a
        cluster node's config)."""
        directory = self.directory if os.path.isdir(self.directory) else None
        replacement = start_redis_server(
            self.port, persistent=self.persistent, directory=directory, options=self.options
        )
        self.process, self.directory = replacement.process, replacement.directory


def start_redis_server(
    port: int | None = None,
    *,
    persistent: bool = False,
    directory: str | None = None,
    options: tuple[str, ...] = (),
) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: run scripts/install (the test command does)")
    port = port or free_port()
    directory = directory or tempfile.mkdtemp(prefix="rb-redis-")
    persistence = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *persistence, "--dir", directory, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(port, process, directory, persistent, options)
    client = redis.Redis(port=port, socket_connect_timeout=0.2)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                server.stop()
                raise RuntimeError(f"redis-server did not start on port {port}") from None
            time.sleep(0.02)  # polling a process we just spawned: no event to await
        finally:
            client.close()
    return server
