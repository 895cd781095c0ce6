"""The bridge in processes of its own, started as a user would: the environment they get, an ASGI app
served by `uvicorn TARGET`, the `realtime-bridge` command read as it logs, a background command (a shell
line, `realtime-bridge serve`) and a program run to its end."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

from bridge.config import Settings
from tests.conftest import SECRET_KEY, suite_settings
from tests.support.helpers import TIMEOUT

ROOT = Path(__file__).resolve().parents[2]
STOP_SECONDS = 15.0
STARTUP_SECONDS = 30.0


def environment(**variables: str) -> dict[str, str]:
    """This environment without BRIDGE_* settings, plus `variables`; PYTHONPATH: this checkout's `bridge`
    first (for a console script too), whichever one the virtualenv installed."""
    kept = {key: value for key, value in os.environ.items() if not key.startswith("BRIDGE_")}
    return kept | {"PYTHONPATH": str(ROOT), **variables}


@dataclass
class ServedApp:
    url: str  # the app's root
    settings: Settings  # what the app's bridge runs with (for the official-client scripts)
    stderr: str = ""  # what the process logged, once it exited

    @property
    def bridge_url(self) -> str:
        return f"{self.url}/realtime"


@contextlib.asynccontextmanager
async def serving_app(target: str, *uvicorn_args: str, public_url: bool = True) -> AsyncIterator[ServedApp]:
    """`uvicorn TARGET` run from this checkout (the app mounts the bridge at /realtime: `bridge_url`), on a
    socket bound here: requests wait in its backlog until the app has started."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        served = ServedApp(f"http://127.0.0.1:{sock.getsockname()[1]}", suite_settings())
        env = {name: value for name, value in os.environ.items() if not name.startswith("BRIDGE_")}
        env["BRIDGE_SECRET_KEY"] = SECRET_KEY
        if public_url:
            env["BRIDGE_PUBLIC_URL"] = served.bridge_url
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *("-m", "uvicorn", target, "--fd", str(sock.fileno()), "--timeout-graceful-shutdown", "2"),
            *uvicorn_args,
            cwd=ROOT,
            env=env,
            pass_fds=[sock.fileno()],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
    try:
        yield served
    finally:
        if process.returncode is None:
            process.terminate()
        _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT)
        served.stderr = stderr.decode(errors="replace")


class Running:
    """A CLI process whose stderr a test reads as it comes, waiting for a line with a deadline."""

    def __init__(self, *args: str, **env: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bridge", *args], cwd=ROOT, env=environment(**env), stderr=subprocess.PIPE
        )
        self.output = ""

    def wait_for(self, pattern: str, timeout: float = STARTUP_SECONDS) -> None:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while re.search(pattern, self.output) is None:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {pattern!r} within {timeout:g} s:\n{self.output}"
            if select.select([self.process.stderr], [], [], remaining)[0]:
                chunk = os.read(self.process.stderr.fileno(), 65536)
                assert chunk, f"exited ({self.process.wait()}) before {pattern!r}:\n{self.output}"
                self.output += chunk.decode(errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(STOP_SECONDS)
        assert self.process.stderr is not None
        self.output += self.process.stderr.read().decode(errors="replace")
        self.process.stderr.close()
        return code


@dataclass
class Background:
    log: Path  # its stdout and stderr

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextlib.contextmanager
def background(command: list[str], cwd: Path, env: dict[str, str]) -> Iterator[Background]:
    """`command` running in a process group of its own (a shell line's background jobs included), all of
    which get SIGTERM at the end; returns once every one has exited."""
    running = Background(cwd / f"background-{time.monotonic_ns()}.log")
    with running.log.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    try:
        yield running
    finally:
        _stop_group(process)


def _stop_group(leader: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_SECONDS
    while True:
        leader.poll()  # reaps the leader: a zombie would still count as the group's
        try:
            os.killpg(leader.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            os.killpg(leader.pid, signal.SIGKILL)
            raise AssertionError(f"processes of group {leader.pid} still ran {STOP_SECONDS:g} s after SIGTERM")
        time.sleep(0.05)  # processes we hold no handle on (a shell's jobs): nothing to await but their exit


async def finished(process: asyncio.subprocess.Process, timeout: float, what: str) -> tuple[bytes, bytes]:
    """The stdout and stderr of `process` once it ended; past `timeout`, it is killed and the test fails with
    the end of its stderr."""
    try:
        return await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        _, stderr = await process.communicate()
        raise AssertionError(f"{what} ran over {timeout:g} s:\n{stderr.decode(errors='replace')[-3000:]}") from None


async def run_program(path: Path, env: dict[str, str], timeout: float = 60) -> str:
    """Runs the Python program `path` (from its own directory) to its end; returns its stdout."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        path.name,
        cwd=path.parent,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await finished(process, timeout, path.name)
    assert process.returncode == 0, f"{path.name} exited {process.returncode}:\n{stderr.decode(errors='replace')}"
    return stdout.decode()
