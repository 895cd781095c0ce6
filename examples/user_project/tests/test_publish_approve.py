"""Publishing waits for an approval: Approve publishes, and nobody answering within the hour does not."""

import pytest

pytestmark = pytest.mark.asyncio


async def test_approving_publishes(bridge_server):
    run = await bridge_server.trigger("publish", {})
    waiting = await bridge_server.run_reaches(run.id, "WAITING")
    await bridge_server.complete_token(waiting.metadata["tokenId"], {"approved": True})
    done = await bridge_server.run_reaches(run.id, "COMPLETED")
    assert done.output == {"published": True}


async def test_an_unanswered_request_is_not_published_after_an_hour(bridge_server):
    run = await bridge_server.trigger("publish", {})
    await bridge_server.run_reaches(run.id, "WAITING")
    bridge_server.advance("1h")  # the token's timeout fires now, not in an hour
    done = await bridge_server.run_reaches(run.id, "COMPLETED")
    assert done.output == {"published": False}
