"""The `debounce` trigger option: a burst of triggers with one key becomes one DELAYED run, pushed back by each
trigger (never past `max_delay` after the first), with the first (leading) or last (trailing) payload; from
the Python SDK and the official trigger route, on both backends."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from bridge import tasks
from bridge.errors import ValidationError
from bridge.models import RunStatus, now_ms
from bridge.runtime.debounce import MAX_DEBOUNCE_KEY_LENGTH
from tests.conftest import RunningServer
from tests.support.helpers import bearer, unique, until_final

BURST = 50


@pytest.mark.parametrize("mode", ["leading", "trailing"])
async def test_a_burst_of_triggers_is_one_run_with_the_first_or_last_payload(server: RunningServer, mode: str) -> None:
    debounce = {"key": unique("burst"), "delay": "1s", "mode": mode, "max_delay": "20s"}
    handles = []
    for n in range(BURST):  # one after another: "first" and "last" are well defined
        handles.append(await tasks.trigger("echo", {"n": n}, debounce=debounce, metadata={"n": n}))
    last_trigger = now_ms()
    other = await tasks.trigger("echo", {"n": "other"}, debounce={**debounce, "key": unique("other")})
    assert {handle.id for handle in handles} == {handles[0].id} != {other.id}

    run = await until_final(handles[0].id)
    expected = 0 if mode == "leading" else BURST - 1
    assert run.status is RunStatus.COMPLETED and run.output == {"echo": {"n": expected}}
    assert run.metadata == {"n": expected}
    assert run.delay_until is not None and run.started_at is not None
    # Started `delay` after the last trigger of the burst, and within max_delay of the first.
    assert last_trigger - 1000 < run.delay_until - 1000 <= last_trigger
    assert run.delay_until <= run.created_at + 20_000 and run.started_at >= run.delay_until
    assert run.attempt_number == 1 and run.executions == 1
    assert (await until_final(other.id)).output == {"echo": {"n": "other"}}

    # Once the run left DELAYED, the key's next trigger starts a new debounced run.
    again = await tasks.trigger("echo", {"n": "again"}, debounce={**debounce, "delay": 0.3})
    assert again.id != run.id
    assert (await until_final(again.id)).output == {"echo": {"n": "again"}}


async def test_concurrent_triggers_of_one_key_make_one_run(server: RunningServer) -> None:
    debounce = {"key": unique("race"), "delay": 0.3}
    handles = await asyncio.gather(*(tasks.trigger("echo", n, debounce=debounce) for n in range(20)))
    assert len({handle.id for handle in handles}) == 1
    run = await until_final(handles[0].id)
    assert run.status is RunStatus.COMPLETED and run.executions == 1


async def test_max_delay_caps_a_run_s_start_and_a_later_trigger_starts_the_next_run(server: RunningServer) -> None:
    # A delay past max_delay leaves no room to push: the run starts at max_delay, the next trigger has its own.
    debounce = {"key": unique("cap"), "delay": "1m", "max_delay": 0.3}
    first = await tasks.trigger("echo", 1, debounce=debounce)
    second = await tasks.trigger("echo", 2, debounce=debounce)
    assert first.id != second.id
    run = await until_final(first.id)
    assert run.output == {"echo": 1} and run.delay_until == run.created_at + 300
    assert (await until_final(second.id)).output == {"echo": 2}


async def test_the_official_route_takes_options_debounce(server: RunningServer, http: httpx.AsyncClient) -> None:
    secret = bearer(server.settings.secret_key)
    debounce = {"key": unique("official"), "delay": "0.3s", "mode": "trailing", "maxDelay": "10s"}
    ids = []
    for n in range(3):
        body = {"payload": {"n": n}, "options": {"debounce": debounce}}
        answer = await http.post("/api/v1/tasks/echo/trigger", json=body, headers=secret)
        assert answer.status_code == 200, answer.text
        assert answer.json()["isCached"] is False
        ids.append(answer.json()["id"])
    assert len(set(ids)) == 1
    assert (await until_final(ids[0])).output == {"echo": {"n": 2}}


BAD: list[tuple[Any, str]] = [
    ("k", "debounce is an object"),
    ({"delay": "1s"}, "debounce.key is a string"),
    ({"key": "", "delay": "1s"}, "debounce.key is a string"),
    ({"key": "k" * (MAX_DEBOUNCE_KEY_LENGTH + 1), "delay": "1s"}, "debounce.key is a string"),
    ({"key": "k"}, "debounce.delay is required"),
    ({"key": "k", "delay": "soon"}, "invalid duration"),
    ({"key": "k", "delay": 0}, "at least 1 ms"),
    ({"key": "k", "delay": True}, "debounce.delay is a duration"),
    ({"key": "k", "delay": "1s", "mode": "middle"}, 'debounce.mode is "leading" or "trailing"'),
    ({"key": "k", "delay": "1s", "wait": 1}, "debounce has no field 'wait'"),
]


async def test_bad_debounce_values_are_refused(server: RunningServer, http: httpx.AsyncClient) -> None:
    for value, message in [*BAD, ({"key": "k", "delay": "1s", "max_delay": "400d"}, "debounce.max_delay is at most")]:
        with pytest.raises(ValidationError, match=re.escape(message)):
            await tasks.trigger("echo", 1, debounce=value)
    with pytest.raises(ValidationError, match="cannot be combined with delay"):
        await tasks.trigger("echo", 1, delay="1h", debounce={"key": "k", "delay": "1s"})
    with pytest.raises(ValidationError, match="cannot be combined with idempotencyKey"):
        await tasks.batch_trigger(
            "echo", [{"payload": 1, "options": {"idempotency_key": "i", "debounce": {"key": "k", "delay": "1s"}}}]
        )
    secret = bearer(server.settings.secret_key)
    for value, message in [
        *BAD,
        ({"key": "k", "delay": "1s", "max_delay": "1s"}, "options.debounce has no field 'max_delay'"),
        ({"key": "k", "delay": "1s", "maxDelay": "400d"}, "debounce.max_delay is at most"),
    ]:
        body = {"payload": 1, "options": {"debounce": value}}
        answer = await http.post("/api/v1/tasks/echo/trigger", json=body, headers=secret)
        assert answer.status_code == 400 and message in answer.json()["error"], (value, answer.text)
