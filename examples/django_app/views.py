"""The app's own route: `POST /api/summarize {"text": ...}` triggers the `summarize` task with the SDK
(an async view, so it runs on the event loop the bridge runs on) and returns `{runId,
publicAccessToken, approvalUrl}`."""

from __future__ import annotations

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from bridge import wait
from examples.summaries import summarize

MAX_TEXT = 100_000


@csrf_exempt  # an API called with JSON, not a form
@require_POST
async def start_summary(request: HttpRequest) -> JsonResponse:
    try:
        text = json.loads(request.body)["text"]
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": 'the body must be JSON: {"text": "..."}'}, status=400)
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
        return JsonResponse({"error": f"text must be a string of 1 to {MAX_TEXT} characters"}, status=400)
    # Your app decides who may start one and who approves: here anyone may.
    approval = await wait.create_token(timeout="1h")
    handle = await summarize.trigger({"text": text, "approvalToken": approval.id})
    return JsonResponse(
        {"runId": handle.id, "publicAccessToken": handle.public_access_token, "approvalUrl": approval.url}
    )
