"""A user's tests, written against bridge.testing's public API only (tests/test_testing_kit.py runs them
as test_user_app.py)."""

import time

import httpx
import pytest

pytestmark = pytest.mark.asyncio  # the project runs pytest-asyncio in strict mode


async def test_approving_completes_the_run(bridge_server):
    run = await bridge_server.trigger("review", {"doc": 42})
    waiting = await bridge_server.run_reaches(run.id, "WAITING")
    await bridge_server.complete_token(waiting.metadata["token"], "yes")
    done = await bridge_server.run_reaches(run.id, "COMPLETED")
    assert done.output == {"approved": "yes"}


async def test_a_24_hour_token_timeout_takes_under_a_second(bridge_server):
    run = await bridge_server.trigger("review", {"doc": 7})
    await bridge_server.run_reaches(run.id, "WAITING")
    started = time.monotonic()
    bridge_server.advance("24h")
    done = await bridge_server.run_reaches(run.id, "COMPLETED")
    assert done.output == {"timedOut": True}
    assert time.monotonic() - started < 1.0


async def test_an_hour_of_wait_for_and_of_retry_backoff_is_skipped(bridge_server):
    napping = await bridge_server.trigger("nap")
    retrying = await bridge_server.trigger("flaky", "order-1")
    await bridge_server.run_reaches(napping.id, "WAITING")
    await bridge_server.trigger("review")  # an unrelated token due in 24 h: not fired by skipping 1 h
    bridge_server.advance("1h")
    assert (await bridge_server.run_reaches(napping.id, "COMPLETED")).output == "rested"
    assert (await bridge_server.run_reaches(retrying.id, "COMPLETED")).output == "second attempt"


async def test_an_hour_of_delay_and_a_ttl_are_skipped(bridge_server):
    delayed = await bridge_server.trigger("nap", delay="1h")
    assert (await bridge_server.run_reaches(delayed.id, "DELAYED")).status.value == "DELAYED"
    started = time.monotonic()
    bridge_server.advance("1h")
    await bridge_server.run_reaches(delayed.id, "WAITING")  # started, now in its own hour-long wait.for_
    assert time.monotonic() - started < 1.0
    held = bridge_server.hold_at("charge-card")
    for _ in range(10):  # the worker's 10 slots, each held in a step: the next run stays QUEUED
        await bridge_server.run_reaches((await bridge_server.trigger("charge", {})).id, "EXECUTING")
    expiring = await bridge_server.trigger("nap", ttl="10m")
    bridge_server.advance("10m")
    expired = await bridge_server.run_reaches(expiring.id, "EXPIRED")
    assert expired.attempt_number == 0  # never executed
    held.release()


async def test_a_held_step_waits_for_the_test(bridge_server):
    hold = bridge_server.hold_at("charge-card")
    run = await bridge_server.trigger("charge")
    assert await hold.reached() == run.id
    assert (await bridge_server.run_reaches(run.id, "EXECUTING")).metadata == {"stage": "charging"}
    hold.release()
    assert (await bridge_server.run_reaches(run.id, "COMPLETED")).output == "done"


async def test_a_held_step_can_fail_or_be_canceled(bridge_server):
    hold = bridge_server.hold_at("charge-card")
    run = await bridge_server.trigger("charge")
    assert await hold.reached() == run.id
    canceled = await bridge_server.trigger("charge")
    await bridge_server.cancel(canceled.id)
    hold.fail("card declined")
    failed = await bridge_server.run_reaches(run.id, "FAILED")
    assert failed.error.message == "card declined"
    assert (await bridge_server.run_reaches(canceled.id, "CANCELED")).status.value == "CANCELED"


async def test_chunks_metadata_and_inputs_from_the_test(bridge_server):
    run = await bridge_server.trigger("chat")
    assert await bridge_server.stream_chunks(run.id, "reply", count=1) == ["hello"]
    assert await bridge_server.push_chunk(run.id, "reply", {"token": "world"}) == 1
    assert await bridge_server.set_metadata(run.id, progress=0.5) == {"progress": 0.5}
    await bridge_server.send_input(run.id, "answers", "42")
    assert (await bridge_server.run_reaches(run.id, "COMPLETED")).output == "42"
    assert await bridge_server.stream_chunks(run.id, "reply") == ["hello", {"token": "world"}]


async def test_a_page_reads_the_run_with_a_public_token(bridge_server):
    run = await bridge_server.trigger("review")
    async with httpx.AsyncClient(base_url=bridge_server.url) as page:
        headers = {"Authorization": f"Bearer {bridge_server.public_token(run.id)}"}
        assert (await page.get(f"/api/v3/runs/{run.id}", headers=headers)).status_code == 200
        other = await bridge_server.trigger("review")
        assert (await page.get(f"/api/v3/runs/{other.id}", headers=headers)).status_code == 403


async def test_run_reaches_says_where_the_run_is(bridge_server):
    hold = bridge_server.hold_at("charge-card")
    run = await bridge_server.trigger("charge")
    await hold.reached()
    with pytest.raises(AssertionError, match=r"is EXECUTING, not COMPLETED, after 0.2 s"):
        await bridge_server.run_reaches(run.id, "COMPLETED", timeout=0.2)
    hold.fail("no")
    with pytest.raises(AssertionError, match=r"is FAILED \(no\), not COMPLETED"):
        await bridge_server.run_reaches(run.id, "COMPLETED")


@pytest.mark.bridge(backend="redis")
async def test_on_redis_too(bridge_server):
    run = await bridge_server.trigger("review")
    await bridge_server.run_reaches(run.id, "WAITING")
    bridge_server.advance("25h")
    assert (await bridge_server.run_reaches(run.id, "COMPLETED")).output == {"timedOut": True}
