"""`serve --workers N`: N forked copies of one server process, and what the parent does while they run.

Each child binds its own SO_REUSEPORT socket on the same port (the kernel spreads connections over them
by a hash of the client's address and port; docs/deployment.md says why not one shared socket). The
parent serves nothing: it starts the children (the first alone, so a start-up mistake is one child's one
line, not N), replaces one that dies after it served (at most MAX_RESTARTS in RESTART_WINDOW_SECONDS),
and on SIGTERM or SIGINT asks every child to stop gracefully, waiting a bounded time.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import struct
import sys
import time
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess

log = logging.getLogger("bridge")
MAX_WORKERS = 64
MAX_RESTARTS = 5  # replacements of children that died after serving, within RESTART_WINDOW_SECONDS
RESTART_WINDOW_SECONDS = 60.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
EXIT_PRINTED = 2  # a child's exit code for a start-up mistake it printed itself (the CLI's usage error code)
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies
_PID = struct.Struct("=i")  # a child says it serves by writing its pid: 4 bytes, one atomic pipe write

Serve = Callable[[Callable[[], None]], None]  # serves until stopped; calls its argument once it accepts connections


class GaveUp(Exception):
    """The parent stopped its children for a reason other than a stop signal; `code` is its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def workers_count(value: str) -> int:
    """`--workers`: 1 to MAX_WORKERS, or `auto`: the cores this process may run on."""
    if value == "auto":
        return min(
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1, MAX_WORKERS
        )
    if not value.isdigit() or not 1 <= int(value) <= MAX_WORKERS:
        raise ValueError(f"{value!r} is not a number of processes from 1 to {MAX_WORKERS}, or auto")
    return int(value)


def exit_quietly(signum: int, frame: object) -> None:
    """The SIGTERM handler of a process uvicorn serves in: uvicorn stops gracefully, then raises the signal it
    stopped on again, which this turns into exit code 0."""
    sys.exit(0)


class Supervisor:
    def __init__(self, count: int, serve: Serve, stop_seconds: float) -> None:
        self.count = count
        self.serve = serve
        self.stop_seconds = stop_seconds  # how long stopping children get before they are killed
        self.children: dict[int, BaseProcess] = {}  # worker number -> its current process
        self.serving: set[int] = set()  # pids that said they accept connections
        self.restarts: deque[float] = deque()
        self.stopping = False
        self._ready_read, self._ready_write = os.pipe()
        self._wake_read, self._wake_write = socket.socketpair()
        self._fork = multiprocessing.get_context("fork")
        self._parent = os.getpid()

    def run(self) -> int:
        """Runs the children until a stop signal, then stops them: 0 when they all stopped in time; else the
        exit code of the failure (2: a child's start-up mistake, which it printed as one line)."""
        self._wake_write.setblocking(False)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in STOP_SIGNALS}
        previous_wakeup = signal.set_wakeup_fd(self._wake_write.fileno())
        try:
            self._start(1)
            self._until(lambda: bool(self.serving))  # the first child alone: its mistake is the only line
            if not self.stopping:
                for number in range(2, self.count + 1):
                    self._start(number)
                self._until(lambda: False)
            return self._stop()
        except GaveUp as gave:
            if gave.code != EXIT_PRINTED:
                log.error("%s; stopping the other workers", gave)
            self._stop()
            return gave.code
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for fd in (self._ready_read, self._ready_write):
                os.close(fd)
            self._wake_read.close()
            self._wake_write.close()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stopping = True

    def _start(self, number: int) -> None:
        # Stop signals wait until the child has its own handlers, so one arriving meanwhile reaches the right code.
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            child = self._fork.Process(target=self._child, args=(number,), name=f"bridge-worker-{number}")
            child.start()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        self.children[number] = child
        log.debug("worker %d of %d: pid %s", number, self.count, child.pid)  # info once it serves

    def _child(self, number: int) -> None:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGTERM, exit_quietly)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # A parent that dies (SIGKILL, out of memory) stops its workers too: orphans would go on serving the
        # port unsupervised, beside the workers of the next parent.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != self._parent:  # it died before prctl
            os.kill(os.getpid(), signal.SIGTERM)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        os.close(self._ready_read)
        self._wake_read.close()
        self._wake_write.close()

        def serving() -> None:
            os.write(self._ready_write, _PID.pack(os.getpid()))

        self.serve(serving)

    def _until(self, done: Callable[[], bool]) -> None:
        """Handles children's news until `done()` or a stop signal."""
        while not done() and not self.stopping:
            sentinels = {child.sentinel: number for number, child in self.children.items()}
            for ready in wait([self._wake_read, self._ready_read, *sentinels]):
                if ready is self._wake_read:
                    self._wake_read.recv(4096)
                elif ready == self._ready_read:
                    pid = _PID.unpack(os.read(self._ready_read, _PID.size))[0]
                    self.serving.add(pid)
                    number = next((n for n, child in self.children.items() if child.pid == pid), 0)
                    log.info("worker %d (pid %d) accepts connections", number, pid)
                elif isinstance(ready, int) and not self.stopping:
                    self._replace(sentinels[ready])

    def _replace(self, number: int) -> None:
        dead = self.children.pop(number)
        dead.join()
        code = dead.exitcode or 0
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        if dead.pid not in self.serving:
            raise GaveUp(f"worker {number} (pid {dead.pid}) {how} before it served", code if code > 0 else 1)
        self.serving.discard(dead.pid)
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_WINDOW_SECONDS:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            raise GaveUp(
                f"worker {number} (pid {dead.pid}) {how}, the {MAX_RESTARTS + 1}th death within "
                f"{RESTART_WINDOW_SECONDS:g} s",
                1,
            )
        self.restarts.append(now)
        log.warning("worker %d (pid %d) %s; starting another", number, dead.pid, how)
        self._start(number)

    def _stop(self) -> int:
        """SIGTERM to every child, then up to stop_seconds for them to exit (SIGKILL after): 0 when all
        exited 0 in time."""
        self.stopping = True
        for child in self.children.values():
            if child.pid is not None and child.exitcode is None:
                os.kill(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        running = [child for child in self.children.values() if child.exitcode is None]
        while running and (remaining := deadline - time.monotonic()) > 0:
            wait([child.sentinel for child in running], remaining)
            running = [child for child in running if child.exitcode is None]
        for child in running:
            log.error("worker pid %s did not stop within %g s: killing it", child.pid, self.stop_seconds)
            child.kill()
            child.join()
        return 0 if all(child.exitcode == 0 for child in self.children.values()) and not running else 1
