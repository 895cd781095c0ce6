"""The task both mount examples (examples/fastapi_app, examples/django_app) run: it summarises a text,
then waits for an editor's approval, which arrives on a wait token's callback URL (a webhook)."""

from __future__ import annotations

from typing import Any

from bridge import metadata, task, wait

SUMMARY_WORDS = 12


@task(id="summarize")
async def summarize(payload: dict[str, Any]) -> dict[str, Any]:
    summary = " ".join(str(payload["text"]).split()[:SUMMARY_WORDS])
    await metadata.set("summary", summary)
    await metadata.set("step", "awaiting approval")
    decision = await wait.for_token(payload["approvalToken"])  # WAITING: no worker slot held meanwhile
    await metadata.set("step", "done")
    approved = decision.ok and isinstance(decision.output, dict) and decision.output.get("approved") is True
    return {"summary": summary, "approved": approved}
