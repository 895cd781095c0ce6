"""The sample user project's tasks: what a user of realtime-bridge writes, and what its page and tests drive.

`summarize` streams a summary word by word and stops early on the page's Cancel button; `publish` waits
for a person to press Approve (a wait token)."""

import asyncio
import contextlib
from typing import Any

from bridge import metadata, streams, task, wait

#: The summary, one word a chunk: the page shows it with `useRealtimeStream(runId, "text")`.
text = streams.define("text")
#: Any value here (the page's Cancel button, `useInputStreamSend("cancel")`) stops the summary.
cancel = streams.input("cancel")


@task(id="summarize")
async def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    """Streams the words of `text`, one every `wordSeconds` (0.2 by default). A value on "cancel" stops
    it before the next word: the run COMPLETES with the words so far and `"stopped": true`."""
    words = str(payload.get("text") or "").split()
    word_seconds = min(max(float(payload.get("wordSeconds", 0.2)), 0.0), 2.0)
    stop = asyncio.Event()
    subscription = cancel.on(lambda _value: stop.set())
    sent: list[str] = []
    try:
        for word in words:
            if stop.is_set():
                break
            await text.append(word + " ")
            sent.append(word)
            # The pause between words is a wait for Cancel: a stop is seen at once, not after the pause.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=word_seconds)
    finally:
        subscription.off()
    return {"text": " ".join(sent), "stopped": len(sent) < len(words)}


@task(id="publish")
async def publish(payload: dict[str, Any]) -> dict[str, bool]:
    """Waits (WAITING, no worker slot held) until someone approves: the page's Approve button completes
    the wait token with `{"approved": true}`. Completes `{"published": false}` on a rejection or when
    nobody answered within `timeout` (default "1h")."""
    token = await wait.create_token(timeout=payload.get("timeout") or "1h")
    # The page completes the token with its own access token (it may complete this token only). A real
    # app might hand it out from its backend to reviewers only; readers of this run may approve here.
    await metadata.set("tokenId", token.id)
    await metadata.set("tokenAccess", token.public_access_token)
    result = await wait.for_token(token)
    approved = result.ok and isinstance(result.output, dict) and result.output.get("approved") is True
    return {"published": approved}
