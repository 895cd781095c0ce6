"""The demo's tasks: what `scripts/run` serves. Each shows one thing a page can watch live."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from typing import Any

from bridge import metadata, streams, task, wait


@task(id="draft-email")
async def draft_email(payload: dict[str, Any]) -> dict[str, Any]:
    """Drafts an email in a few steps, reporting progress (0..1) and the current step in metadata."""
    steps = ["reading the thread", "outlining", "writing", "polishing"]
    delay = float(payload.get("stepSeconds", 0.6))
    for number, step in enumerate(steps, start=1):
        await metadata.set("step", step)
        await asyncio.sleep(delay)  # stands in for the real work
        await metadata.set("progress", number / len(steps))
    to = payload.get("to", "someone@example.com")
    return {"to": to, "subject": "Re: your question", "body": f"Hello {to}, here is the answer."}


@task(id="always-fails", retry={"max_attempts": 2, "min_timeout": 0.5, "randomize": False})
async def always_fails(payload: dict[str, Any]) -> None:
    """Fails after a moment, to show a FAILED run and its error; retried once first (half a second
    later), so the page shows attempt 2 before FAILED."""
    await metadata.set("progress", 0.5)
    await asyncio.sleep(float(payload.get("seconds", 0.5)))
    raise RuntimeError("the demo task failed on purpose")


# ---- chat: a reply streamed token by token ---------------------------------------------------

ai = streams.define("ai")

#: The fake model's replies: deterministic, so the end-to-end tests know the exact text.
FAKE_REPLIES: dict[str, str] = {
    "hello": "Hello! I am a pretend model living in examples/demo/tasks.py. "
    "Every word you see arrived as its own chunk of the run's output stream.",
    "what is realtime-bridge?": "realtime-bridge runs your Python tasks and streams their progress and output "
    "to React pages over one WebSocket, with the same hooks as Trigger.dev.",
}
FAKE_DEFAULT = (
    "You said: {prompt}. I am a fake model, so I only echo it back, one word at a time, "
    "about every forty milliseconds, and the page shows each word as it arrives."
)


def fake_reply(prompt: str) -> str:
    """The fake model's whole reply to `prompt` (the same every time)."""
    clean = " ".join(prompt.split())
    return FAKE_REPLIES.get(clean.lower()) or FAKE_DEFAULT.format(prompt=clean or "nothing")


def split_tokens(text: str) -> list[str]:
    """Word tokens that join back into `text` exactly: each word keeps the space before it."""
    words = text.split(" ")
    return [words[0]] + [" " + word for word in words[1:]] if words else []


async def fake_model(prompt: str, token_seconds: float) -> AsyncIterator[str]:
    for token in split_tokens(fake_reply(prompt)):
        await asyncio.sleep(token_seconds)  # stands in for the model thinking
        yield token


async def openai_model(prompt: str) -> AsyncIterator[str]:
    """Streams a reply from an OpenAI-compatible chat completions endpoint (SSE)."""
    import httpx  # a dependency of the bridge

    base = os.environ["OPENAI_BASE_URL"].rstrip("/")
    body = {
        "model": os.environ.get("OPENAI_MODEL", "gpt-4o-mini"),
        "stream": True,
        "messages": [{"role": "user", "content": prompt}],
    }
    headers = {"Authorization": f"Bearer {os.environ['OPENAI_API_KEY']}"}
    async with (
        httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=10.0)) as client,
        client.stream("POST", f"{base}/chat/completions", json=body, headers=headers) as response,
    ):
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            choices = json.loads(data).get("choices") or []
            delta = (choices[0].get("delta") or {}).get("content") if choices else None
            if delta:
                yield delta


def use_openai(payload: dict[str, Any]) -> bool:
    configured = bool(os.environ.get("OPENAI_BASE_URL") and os.environ.get("OPENAI_API_KEY"))
    return configured and payload.get("model") != "fake"


#: The chat page's Stop button sends any value here: the task stops generating.
cancel = streams.input("cancel")


class Stopped:
    """Whether a stop cut the generation short (a stop after the last token changes nothing)."""

    cut = False


async def until_stopped(source: AsyncIterator[str], stop: asyncio.Event, stopped: Stopped) -> AsyncIterator[str]:
    """The tokens of `source` until `stop` is set: the model call is abandoned at once (not after
    its next token), and no token is yielded once `stop` is set."""
    stopper = asyncio.ensure_future(stop.wait())
    try:
        while True:
            pending = asyncio.ensure_future(anext(source))
            await asyncio.wait({pending, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stop.is_set():  # the stop wins, even over a token that came at the same moment
                stopped.cut = True
                pending.cancel()
                with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                    await pending
                return
            try:
                token = pending.result()
            except StopAsyncIteration:
                return
            yield token
    finally:
        stopper.cancel()
        await source.aclose()  # closes the model's HTTP stream too


@task(id="chat")
async def chat(payload: dict[str, Any]) -> dict[str, Any]:
    """Answers `prompt`, streaming the reply to the run's stream "ai" one token per chunk.

    The model is a deterministic fake (a fixed reply per prompt, one word every `tokenSeconds`,
    0.045 s by default), or an OpenAI-compatible model when OPENAI_BASE_URL and OPENAI_API_KEY
    are set (OPENAI_MODEL picks the model; `{"model": "fake"}` in the payload forces the fake).

    A value on the input stream "cancel" (the page's Stop button) aborts the generation: no token
    is appended after the task sees it, and the run COMPLETES with the partial reply and
    `"stopped": true` (not CANCELED: the text so far is the run's output).
    """
    prompt = str(payload.get("prompt") or "")[:2000]
    token_seconds = min(max(float(payload.get("tokenSeconds", 0.045)), 0.0), 2.0)
    model = "openai" if use_openai(payload) else "fake"
    await metadata.set("model", model)
    source = openai_model(prompt) if model == "openai" else fake_model(prompt, token_seconds)
    stop = asyncio.Event()
    stopped = Stopped()
    subscription = cancel.on(lambda _value: stop.set())
    parts: list[str] = []
    try:
        piped = ai.pipe(until_stopped(source, stop, stopped))
        async for token in piped:  # every token is stored and sent to readers as it is seen here
            parts.append(token)
        await piped.wait_until_complete()
    finally:
        subscription.off()
    if stopped.cut:
        await metadata.set("stopped", True)
    return {"text": "".join(parts), "tokens": len(parts), "model": model, "stopped": stopped.cut}


# ---- approval: a run that waits for a person -------------------------------------------------

#: The approval page's Approve / Reject buttons send `{"approved": true | false}` here.
approval = streams.input("approval")


def draft_text(topic: str) -> str:
    return f"Hi team, a short note on {topic}: everything is on track, and the details follow next week."


@task(id="draft-approval")
async def draft_approval(payload: dict[str, Any]) -> dict[str, Any]:
    """Drafts a short text (metadata `draft`), then waits (WAITING, worker slot freed) for a value
    on the input stream "approval"; completes with `{"approved": bool, "text": draft}`. No
    decision within `timeout` (default "5m"): the run FAILS with InputStreamTimeoutError."""
    topic = " ".join(str(payload.get("topic") or "the launch").split())[:200]
    await metadata.set("step", "drafting")
    await asyncio.sleep(min(max(float(payload.get("draftSeconds", 0.3)), 0.0), 5.0))
    draft = draft_text(topic)
    await metadata.set("draft", draft)
    await metadata.set("step", "waiting for approval")
    decision = await approval.wait(timeout=payload.get("timeout") or "5m")
    approved = isinstance(decision, dict) and decision.get("approved") is True
    await metadata.set("step", "approved" if approved else "rejected")
    return {"approved": approved, "text": draft}


# ---- review: a run that waits on a wait token ------------------------------------------------


def review_decision(output: Any) -> dict[str, Any]:
    """The review's result from the token's output: whoever completes it (a page, a webhook, a
    script) may send any JSON, so only `approved: true` approves."""
    fields = output if isinstance(output, dict) else {}
    comment = fields.get("comment")
    via = fields.get("via")
    return {
        "approved": fields.get("approved") is True,
        "comment": comment[:500] if isinstance(comment, str) else None,
        "via": via[:50] if isinstance(via, str) else None,
    }


@task(id="review")
async def review(payload: dict[str, Any]) -> dict[str, Any]:
    """Creates a wait token (metadata `tokenId`), then waits on it (WAITING, worker slot freed)
    until a reviewer completes it: with `useWaitToken` on a page (the token's id and an access
    token with `write:waitpoints:<id>` come from the demo's backend), or by POSTing JSON to the
    token's callback URL (a webhook). Completes with `{"approved": bool, "comment", "via"}`, or
    `{"timedOut": true}` when nobody completed the token within `timeout` (default "10m").
    `idempotencyKey`: the same key returns the same token (one already completed resumes at once)."""
    token = await wait.create_token(
        timeout=payload.get("timeout") or "10m",
        idempotency_key=payload.get("idempotencyKey") or None,
        tags=["review"],
    )
    await metadata.set("tokenId", token.id)
    await metadata.set("step", "waiting for review")
    result = await wait.for_token(token)
    if not result.ok:
        await metadata.set("step", "timed out")
        return {"timedOut": True}
    decision = review_decision(result.output)
    await metadata.set("step", "approved" if decision["approved"] else "rejected")
    return decision
