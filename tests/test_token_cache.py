"""What the kept (already verified) tokens and the run feed's per-session authorization must not change: a token
grants what its scopes say on every use, over WebSocket and over the official long-poll feed; and the encoded
rows the feed sessions share stay within their bound."""

from __future__ import annotations

import httpx
import orjson
import pytest

from bridge import tasks
from bridge.models import Run
from bridge.server.official.electric import COLUMNS, EncodedRows, row_value
from tests.conftest import RunningServer
from tests.support.helpers import bearer, token, until_final
from tests.support.ws_client import connect

pytestmark = pytest.mark.cluster


async def finished_echo() -> str:
    handle = await tasks.trigger("echo", {"n": 1})
    await until_final(handle.id)
    return handle.id


async def test_a_token_used_for_one_run_is_refused_for_another_over_websocket(server: RunningServer) -> None:
    mine, other = await finished_echo(), await finished_echo()
    mine_only = token(f"read:runs:{mine}")
    async with connect(server.ws_url) as client:
        await client.subscribe_run("a", mine, mine_only)
        assert (await client.expect(lambda f: f.get("id") == "a"))["type"] == "snapshot"
        await client.subscribe_run("b", other, mine_only)  # the same token, now kept as verified
        refused = await client.expect(lambda f: f.get("id") == "b")
        assert refused["type"] == "error" and refused["code"] == "forbidden", refused
        await client.subscribe_run("c", mine, mine_only)
        assert (await client.expect(lambda f: f.get("id") == "c"))["type"] == "snapshot"


async def test_a_feed_session_answers_only_tokens_that_may_read_its_run(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    mine, other = await finished_echo(), await finished_echo()
    mine_only, other_only = bearer(token(f"read:runs:{mine}")), bearer(token(f"read:runs:{other}"))
    path = f"/realtime/v1/runs/{mine}"
    first = await http.get(path, params={"offset": "-1"}, headers=mine_only)
    assert first.status_code == 200, first.text
    handle, offset = first.headers["electric-handle"], first.headers["electric-offset"]
    poll = {"offset": offset, "handle": handle}

    # Its handle with a token for another run: refused, without reading the run again.
    refused = await http.get(path, params=poll, headers=other_only)
    assert refused.status_code == 403 and refused.json()["code"] == "unauthorized", refused.text
    # The other run's path with this session's handle: the token may not read that run.
    refused = await http.get(f"/realtime/v1/runs/{other}", params=poll, headers=mine_only)
    assert refused.status_code == 403, refused.text
    # The right token still gets its session's answer.
    again = await http.get(path, params=poll, headers=mine_only)
    assert again.status_code == 200 and again.headers["electric-handle"] == handle, again.text


async def test_a_refused_first_poll_opens_no_feed_session(server: RunningServer, http: httpx.AsyncClient) -> None:
    mine, other = await finished_echo(), await finished_echo()
    sessions = server.uvicorn.config.app.state.feed_sessions
    before = sessions.count
    mine_only = bearer(token(f"read:runs:{mine}"))
    refused = await http.get(f"/realtime/v1/runs/{other}", params={"offset": "-1"}, headers=mine_only)
    assert refused.status_code == 403, refused.text
    missing = await http.get("/realtime/v1/runs/run_missing", params={"offset": "-1"}, headers=mine_only)
    assert missing.status_code == 404, missing.text
    assert sessions.count == before


def run_of(version: int, size: int) -> Run:
    return Run(id="run_rows", task_identifier="echo", version=version, metadata={"pad": "x" * size})


def test_encoded_rows_are_the_row_values_and_stay_within_their_bytes() -> None:
    rows = EncodedRows(max_bytes=10_000)
    runs = [run_of(version, 1_000) for version in range(1, 30)]  # each built once: a run's timestamps are its own
    encoded = [rows.value(run, COLUMNS) for run in runs]
    assert rows.size_bytes <= 10_000
    assert orjson.loads(orjson.dumps(encoded[-1])) == row_value(runs[-1], COLUMNS)
    assert rows.value(runs[-1], COLUMNS) is encoded[-1]  # kept: encoded once
    assert rows.value(runs[0], COLUMNS) is not encoded[0]  # the oldest went first
    big = run_of(30, 20_000)
    huge = rows.value(big, COLUMNS)  # over the whole bound: encoded, not kept
    assert orjson.loads(orjson.dumps(huge)) == row_value(big, COLUMNS)
    assert rows.size_bytes <= 10_000
