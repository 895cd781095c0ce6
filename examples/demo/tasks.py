"""The demo's tasks: what `scripts/run` serves. Each shows one thing a page can watch live."""

from __future__ import annotations

import asyncio
from typing import Any

from bridge import metadata, task


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


@task(id="always-fails")
async def always_fails(payload: dict[str, Any]) -> None:
    """Fails after a moment, to show a FAILED run and its error."""
    await metadata.set("progress", 0.5)
    await asyncio.sleep(float(payload.get("seconds", 0.5)))
    raise RuntimeError("the demo task failed on purpose")
