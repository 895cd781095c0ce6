"""The `realtime-bridge` command, run for real as a subprocess (`python -m bridge` from this checkout):
a mistake in how it was started is one line on stderr and exit code 2; a Redis that is not there yet
is waited for, logged once."""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

import bridge
from bridge import cli
from bridge.backends.redis.pubsub import RECONNECT_BACKOFF_CAP_SECONDS, reconnect_delay
from bridge.supervisor import workers_count
from bridge.testing.redis_server import RedisServer, free_port, start_redis_server
from tests.conftest import SECRET_KEY
from tests.support.processes import Running, environment

ROOT = Path(__file__).resolve().parent.parent
TASKS = str(ROOT / "tests/support/crash_tasks.py")  # registers its tasks with the default registry


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        cwd=ROOT,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def assert_one_line_error(result: subprocess.CompletedProcess[str], expected: str) -> None:
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert len(result.stderr.splitlines()) == 1 and expected in result.stderr, result.stderr
    assert result.stderr.startswith("realtime-bridge ") and "Traceback" not in result.stderr


def test_version_is_the_package_version_from_python_m_and_the_script() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert bridge.__version__ == declared
    script = Path(sys.executable).with_name("realtime-bridge")
    for command in ([sys.executable, "-m", "bridge"], [str(script)]):
        shown = subprocess.run([*command, "--version"], env=environment(), capture_output=True, text=True, timeout=60)
        assert (shown.returncode, shown.stdout) == (0, f"realtime-bridge {declared}\n"), shown.stderr


def test_every_option_has_help_that_shows_its_default() -> None:
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == {"serve", "worker", "testserver"}
    for name, command in commands.items():
        for action in command._actions:
            if action.dest != "help":
                assert action.help and "default: " in action.help, f"{name} {action.option_strings}"
    shown = run_cli("serve", "--help")
    assert shown.returncode == 0 and "(default: 8787)" in shown.stdout and "(default: 127.0.0.1)" in shown.stdout


KEY = {"BRIDGE_SECRET_KEY": SECRET_KEY}
NOWHERE = "redis://127.0.0.1:1/0"
MISTAKES = {
    "no-file": (["serve", "--tasks", "missing.py"], {}, "cannot load tasks from missing.py: no such file"),
    "no-module": (["serve", "--tasks", "no_such.module"], {}, "No module named 'no_such'"),
    "serve-key": (["serve", "--redis-url", NOWHERE], {}, "BRIDGE_SECRET_KEY is not set: with Redis"),
    "worker-key": (["worker", "--tasks", TASKS], {"BRIDGE_REDIS_URL": NOWHERE}, "BRIDGE_SECRET_KEY is not set"),
    "short-key": (["serve"], {"BRIDGE_SECRET_KEY": "tr_dev_short"}, "is 12 bytes; it needs at least 32"),
    "url-scheme": (["serve", "--redis-url", "127.0.0.1:6379"], KEY, "Redis URL must specify one of the following"),
    "url-port": (["worker", "--tasks", TASKS, "--redis-url", "redis://h:port/0"], KEY, "Redis URL (--redis-url"),
    "worker-memory": (["worker", "--tasks", TASKS], {}, "needs --redis-url"),
    "attempts": (["serve", "--max-attempts", "0"], {}, "--max-attempts / BRIDGE_MAX_ATTEMPTS is 1 to 100"),
    "testserver-tasks": (["testserver"], {}, "give --tasks MODULE_OR_FILE: the tasks the test drives"),
    "testserver-file": (["testserver", "--tasks", "missing.py"], {}, "cannot load tasks from missing.py"),
    "workers-memory": (["serve", "--workers", "2"], {}, "--workers 2 needs --redis-url: on the in-memory backend"),
    "workers-tasks": (
        ["serve", "--workers", "2", "--redis-url", NOWHERE, "--tasks", "missing.py"],
        KEY,
        "cannot load tasks from missing.py: no such file",
    ),
}


@pytest.mark.parametrize(("args", "env", "expected"), MISTAKES.values(), ids=MISTAKES.keys())
def test_a_startup_mistake_is_one_line_and_exit_code_2(args: list[str], env: dict[str, str], expected: str) -> None:
    assert_one_line_error(run_cli(*args, **env), expected)


def test_a_tasks_file_that_does_not_import_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "broken_tasks.py"
    broken.write_text("def draft(:\n")
    assert_one_line_error(
        run_cli("serve", "--tasks", str(broken)), "SyntaxError: invalid syntax (broken_tasks.py, line 1)"
    )
    raising = tmp_path / "raising_tasks.py"
    raising.write_text("from bridge import task\n\nmissing_name\n")
    assert_one_line_error(run_cli("serve", "--tasks", str(raising)), "NameError: name 'missing_name' is not defined")


@pytest.mark.parametrize(
    ("args", "env"), [(["--workers", "0"], {}), (["--workers", "65"], {}), ([], {"BRIDGE_WORKERS": "x"})]
)
def test_a_number_of_workers_is_1_to_64_or_auto(args: list[str], env: dict[str, str]) -> None:
    result = run_cli("serve", *args, **env)
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    assert (
        "argument --workers: " in result.stderr
        and "is not a number of processes from 1 to 64, or auto" in result.stderr
    )
    assert workers_count("auto") == min(len(os.sched_getaffinity(0)), 64)


def test_a_worker_process_that_cannot_start_stops_them_all_in_one_line(redis_server: RedisServer) -> None:
    """A mistake only the started process finds (here a Redis database that does not exist): the first
    worker's one line, exit code 2, and no second worker started."""
    missing_database = redis_server.url.rsplit("/", 1)[0] + "/999"
    result = run_cli("serve", "--workers", "2", "--redis-url", missing_database, BRIDGE_SECRET_KEY=SECRET_KEY)
    assert_one_line_error(result, f"Redis at 127.0.0.1:{redis_server.port} refused the connection")


def test_a_port_in_use_is_one_line(busy_port: int) -> None:
    assert_one_line_error(run_cli("serve", "--port", str(busy_port)), f"port {busy_port} on 127.0.0.1 is in use")


def test_a_redis_refusing_the_connection_is_one_line(redis_server: RedisServer) -> None:
    missing_database = redis_server.url.rsplit("/", 1)[0] + "/999"
    result = run_cli("worker", "--tasks", TASKS, "--redis-url", missing_database, BRIDGE_SECRET_KEY=SECRET_KEY)
    assert_one_line_error(result, f"Redis at 127.0.0.1:{redis_server.port} refused the connection")


def test_debug_shows_the_traceback() -> None:
    result = run_cli("serve", "--tasks", "missing.py", "--debug")
    assert result.returncode == 1 and "Traceback" in result.stderr and "FileNotFoundError" in result.stderr


def test_in_memory_serve_says_in_one_line_that_its_key_is_a_development_one() -> None:
    server = Running("serve", "--port", str(free_port()))
    try:
        server.wait_for("Application startup complete")
    finally:
        server.stop()  # uvicorn stops gracefully, then dies of the SIGTERM it caught, as it always did
    assert "Application shutdown complete" in server.output
    mentions = [line for line in server.output.splitlines() if "BRIDGE_SECRET_KEY" in line]
    assert len(mentions) == 1 and "random development key" in mentions[0], server.output


def test_a_worker_started_before_redis_waits_for_it_logging_the_outage_once() -> None:
    port = free_port()
    worker = Running(
        "worker", "--tasks", TASKS, "--redis-url", f"redis://127.0.0.1:{port}/0", BRIDGE_SECRET_KEY=SECRET_KEY
    )
    redis: RedisServer | None = None
    try:
        worker.wait_for(f"Redis at 127.0.0.1:{port}: backend unavailable")
        redis = start_redis_server(port)
        worker.wait_for(r"worker \S+ running crash-block-forever, crash-quick")
    finally:
        code = worker.stop()
        if redis is not None:
            redis.stop()
    assert code == 0, worker.output
    assert worker.output.count("backend unavailable") == 1, worker.output  # however many retries it took
    assert worker.output.count("backend available again") == 1, worker.output


def test_redis_retries_back_off_from_a_tenth_of_a_second_to_at_most_5_s() -> None:
    assert RECONNECT_BACKOFF_CAP_SECONDS == 5.0  # docs/limits.md
    assert 0.05 <= reconnect_delay(1) <= 0.1
    assert all(2.5 <= reconnect_delay(failures) <= 5.0 for failures in range(7, 100))
