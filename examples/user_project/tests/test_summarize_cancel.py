"""Cancel stops a summary mid-stream: the run completes with the words streamed so far."""

import pytest

pytestmark = pytest.mark.asyncio

TEXT = " ".join(f"word{n}" for n in range(50))  # 10 s at the default pace: Cancel lands long before the end


async def test_cancel_completes_the_summary_with_the_words_so_far(bridge_server):
    run = await bridge_server.trigger("summarize", {"text": TEXT})
    first = await bridge_server.stream_chunks(run.id, "text", count=1)
    assert first == ["word0 "]
    await bridge_server.send_input(run.id, "cancel", True)
    done = await bridge_server.run_reaches(run.id, "COMPLETED")
    assert done.output["stopped"] is True
    streamed = await bridge_server.stream_chunks(run.id, "text")
    assert 1 <= len(streamed) < 50
    assert done.output["text"] == "".join(streamed).strip()
