"""Runs a script of the official-client harness (e2e/official-client) against a test server.

The bridge under test serves from the test's own event loop, so the script runs as an asyncio
subprocess (a blocking `subprocess.run` would stall the server it talks to). Each script prints
exactly one JSON line; `run_script` returns it parsed, together with the exit code and stderr.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import orjson

from bridge.config import Settings
from tests.support.processes import finished

HARNESS_DIR = Path(__file__).resolve().parents[2] / "e2e" / "official-client"
DEFAULT_TIMEOUT_SECONDS = 45.0
_SLACK_SECONDS = 10.0  # the script's own timeout fires this much earlier, so it still prints its partial result


class Reachable(Protocol):
    """A bridge the scripts talk to: the test server (`RunningServer`), or one mounted in an app."""

    @property
    def url(self) -> str: ...  # the official clients' baseURL

    @property
    def settings(self) -> Settings: ...


class HarnessMissingError(RuntimeError):
    pass


def harness_problem() -> str | None:
    """Why the harness cannot run here, or None."""
    if shutil.which("node") is None:
        return "`node` is not on PATH: install Node >= 20.19 (see e2e/official-client/README.md)"
    if not (HARNESS_DIR / "node_modules" / "@trigger.dev" / "react-hooks").is_dir():
        return f"{HARNESS_DIR}/node_modules is missing: run `scripts/install --dev` (it runs `npm ci` there)"
    return None


@dataclass
class HarnessResult:
    exit_code: int
    result: dict[str, Any]
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and self.result.get("ok") is True

    def __getitem__(self, key: str) -> Any:
        return self.result[key]

    def explain(self) -> str:
        """For assertion messages: the result without the request log, the requests, and stderr's tail."""
        summary = {k: v for k, v in self.result.items() if k != "requests"}
        requests = "\n".join(
            f"  {r.get('t')}ms {r.get('method')} {r.get('path')} -> {r.get('status', r.get('error'))}"
            for r in self.result.get("requests", [])
        )
        return f"exit {self.exit_code}\n{summary}\nrequests:\n{requests}\nstderr:\n{self.stderr[-3000:]}"


async def run_script(
    server: Reachable,
    script: str,
    *args: str,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
    env: dict[str, str] | None = None,
) -> HarnessResult:
    problem = harness_problem()
    if problem:
        raise HarnessMissingError(problem)
    harness_ms = int((timeout - _SLACK_SECONDS) * 1000)
    process = await asyncio.create_subprocess_exec(
        "node",
        script,
        *args,
        cwd=HARNESS_DIR,
        env={
            **os.environ,
            "BRIDGE_URL": server.url,
            "BRIDGE_SECRET_KEY": server.settings.secret_key,
            "HARNESS_TIMEOUT_MS": str(harness_ms),
            **(env or {}),
        },
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await finished(process, timeout, f"{script} {args}")
    lines = [line for line in stdout.decode().splitlines() if line.strip()]
    text = stderr.decode(errors="replace")
    if not lines:
        raise AssertionError(f"{script} {args} printed no result line (exit {process.returncode})\nstderr:\n{text}")
    try:
        result = orjson.loads(lines[-1])
    except orjson.JSONDecodeError as exc:
        raise AssertionError(f"{script} printed a non-JSON last line: {lines[-1][:500]!r}\nstderr:\n{text}") from exc
    assert process.returncode is not None
    return HarnessResult(process.returncode, result, text)
