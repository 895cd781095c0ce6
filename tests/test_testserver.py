"""`realtime-bridge testserver`, run for real as a subprocess: its JSON line, and the test-only `/_test/` API
that drives its runs (the Playwright helper's controls); absent from `serve`."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SECRET_KEY, RunningServer
from tests.support.processes import ROOT, environment

TASKS = str(ROOT / "tests/testing_kit/user_tasks.py")
STARTUP_SECONDS = 30.0
STOP_SECONDS = 15.0


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    line: dict[str, Any]
    client: httpx.Client

    def post(self, path: str, body: object = None, **kwargs: Any) -> httpx.Response:
        return self.client.post(path, json=body if body is not None else {}, **kwargs)

    def wait(self, run_id: str, status: str, timeout: int = 10) -> httpx.Response:
        return self.client.get(f"/_test/runs/{run_id}/wait", params={"status": status, "timeout": timeout})

    def trigger(self, task: str, payload: object = None) -> str:
        response = self.post("/_test/triggers", {"task": task, "payload": payload})
        assert response.status_code == 200, response.text
        run_id: str = response.json()["id"]
        return run_id


def read_line(process: subprocess.Popen[bytes], timeout: float) -> bytes:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    output = b""
    while b"\n" not in output:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no line within {timeout:g} s: {output!r}"
        if select.select([process.stdout], [], [], remaining)[0]:
            chunk = os.read(process.stdout.fileno(), 65536)
            assert chunk, f"exited ({process.wait()}) before its line: {output!r}"
            output += chunk
    return output


@contextlib.contextmanager
def start_testserver(*args: str) -> Iterator[Served]:
    """`python -m bridge testserver --tasks TASKS --port 0 ARGS`, until SIGTERM ends it (exit 0); none of the
    processes it started outlives it."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bridge", "testserver", "--tasks", TASKS, "--port", "0", *args],
        cwd=ROOT,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        output = read_line(process, STARTUP_SECONDS)
        line = json.loads(output)
        headers = {"Authorization": f"Bearer {line['secretKey']}"}
        with httpx.Client(base_url=line["url"], headers=headers, timeout=30) as client:
            yield Served(process, line, client)
        assert output.count(b"\n") == 1  # nothing but the one line
    finally:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        process.terminate()
        assert process.wait(STOP_SECONDS) == 0
        for child in children:
            with pytest.raises(ProcessLookupError):
                os.kill(int(child), 0)
        assert process.stdout is not None
        process.stdout.close()


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    with start_testserver() as running:
        yield running


def test_prints_one_json_line_once_it_serves(served: Served) -> None:
    assert set(served.line) == {"url", "secretKey", "pid"}
    assert served.line["pid"] == served.process.pid
    assert served.line["secretKey"].startswith("tr_test_")
    assert served.client.get("/healthz").status_code == 200  # no retry: it accepted connections already


def test_trigger_gives_a_page_token_and_a_token_completes_the_wait(served: Served) -> None:
    response = served.post("/_test/triggers", {"task": "review", "payload": {"doc": 1}, "options": {"tags": ["t"]}})
    run_id, public_token = response.json()["id"], response.json()["publicToken"]
    page = served.client.get(f"/api/v3/runs/{run_id}", headers={"Authorization": f"Bearer {public_token}"})
    assert page.status_code == 200 and page.json()["tags"] == ["t"]
    waiting = served.wait(run_id, "WAITING").json()
    assert served.post(f"/_test/tokens/{waiting['metadata']['token']}/complete", {"data": "yes"}).json() == {"ok": True}
    completed = served.wait(run_id, "COMPLETED")
    assert completed.status_code == 200 and completed.json()["output"] == {"approved": "yes"}


def test_a_24_hour_token_timeout_in_under_a_second(served: Served) -> None:
    run_id = served.trigger("review", {"doc": 2})
    assert served.wait(run_id, "WAITING").status_code == 200
    started = time.monotonic()
    assert served.post("/_test/clock/advance", {"duration": "24h"}).status_code == 200
    assert served.wait(run_id, "COMPLETED").json()["output"] == {"timedOut": True}
    assert time.monotonic() - started < 1.0


def test_a_held_step_waits_for_its_release(served: Served) -> None:
    assert served.post("/_test/holds", {"step": "charge-card"}).status_code == 201
    run_id = served.trigger("charge", {})
    assert served.client.get("/_test/holds/charge-card/reached").json() == {"runId": run_id}
    elsewhere = served.wait(run_id, "COMPLETED", timeout=1)
    assert elsewhere.status_code == 408 and elsewhere.json()["status"] == "EXECUTING"
    assert "not COMPLETED" in elsewhere.json()["error"]
    assert served.post("/_test/holds/charge-card/release").status_code == 200
    assert served.wait(run_id, "COMPLETED").json()["output"] == "done"


def test_chunks_metadata_and_inputs_reach_the_run(served: Served) -> None:
    run_id = served.trigger("chat")  # it waits for an input on "answers"
    pushed = [served.post(f"/_test/runs/{run_id}/chunks/extra", {"chunk": {"n": n}}).json() for n in range(2)]
    assert pushed == [{"index": 0}, {"index": 1}]
    assert served.post(f"/_test/runs/{run_id}/metadata", {"stage": "typing"}).json()["metadata"] == {"stage": "typing"}
    assert served.post(f"/_test/runs/{run_id}/inputs/answers", {"data": "hi"}).json() == {"ok": True}
    completed = served.wait(run_id, "COMPLETED").json()
    assert completed["output"] == "hi" and completed["metadata"] == {"stage": "typing"}


BAD_REQUESTS = [
    ("/_test/triggers", b"[1]", "the body must be a JSON object"),
    ("/_test/triggers", b"{not json", "not valid JSON"),
    ("/_test/triggers", b'{"payload": 1}', "task must be a non-empty string"),
    ("/_test/triggers", b'{"task": "chat", "options": {"maxAttempts": "x"}}', "maxAttempts"),
    ("/_test/triggers", b'{"task": "chat", "options": {"bogus": 1}}', "options.bogus"),
    ("/_test/clock/advance", b"{}", "duration"),
    ("/_test/clock/advance", b'{"duration": "soon"}', "invalid duration"),
    ("/_test/clock/advance", b'{"duration": -1}', "not negative"),
    ("/_test/clock/advance", b'{"duration": [1]}', "duration"),
    ("/_test/holds", b'{"step": ""}', "step must be a non-empty string"),
    ("/_test/runs/run_x/chunks/k", b"{}", "chunk"),
    ("/_test/runs/run_x/inputs/answers", b"{}", "data"),
]


def test_bad_bodies_are_json_errors_naming_the_field(served: Served) -> None:
    for path, body, message in BAD_REQUESTS:
        response = served.client.post(path, content=body)
        assert 400 <= response.status_code < 500, (path, body, response.text)
        assert message in response.json()["error"], (path, body, response.text)


def test_bad_queries_and_unknown_ids(served: Served) -> None:
    run_id = served.trigger("charge", {})
    assert served.wait(run_id, "NOPE").status_code == 400
    for timeout in ("0", "61", "1.5", "x"):
        bad = served.client.get(f"/_test/runs/{run_id}/wait", params={"status": "COMPLETED", "timeout": timeout})
        assert bad.status_code == 400 and "timeout must be a whole number from 1 to 60" in bad.json()["error"]
    assert served.wait("run_unknown", "COMPLETED").status_code == 404
    assert served.post("/_test/tokens/waitpoint_unknown/complete", {"data": 1}).status_code == 404
    assert served.post("/_test/runs/run_unknown/metadata", {"a": 1}).status_code == 404
    assert served.post("/_test/triggers", {"task": "no-such-task"}).status_code in (400, 404, 422)


ROUTES = [
    ("POST", "/_test/tokens/t/complete"),
    ("POST", "/_test/runs/r/chunks/k"),
    ("POST", "/_test/runs/r/metadata"),
    ("POST", "/_test/runs/r/inputs/s"),
    ("GET", "/_test/runs/r/wait?status=COMPLETED"),
    ("POST", "/_test/clock/advance"),
    ("POST", "/_test/triggers"),
    ("POST", "/_test/holds"),
    ("GET", "/_test/holds/s/reached"),
    ("POST", "/_test/holds/s/release"),
]


def test_every_route_wants_the_secret_key(served: Served) -> None:
    public_token = served.post("/_test/triggers", {"task": "charge", "payload": {}}).json()["publicToken"]
    for headers in (
        {"Authorization": ""},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {public_token}"},
    ):
        for method, path in ROUTES:
            response = served.client.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"]


async def test_serve_has_no_test_api(server: RunningServer) -> None:
    async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {SECRET_KEY}"}) as client:
        for method, path in ROUTES:
            response = await client.request(method, path, json={})
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["code"] == "not_found"


def test_with_redis_of_its_own() -> None:
    with start_testserver("--redis") as running:
        run_id = running.trigger("charge", {})
        assert running.wait(run_id, "COMPLETED").json()["output"] == "done"
