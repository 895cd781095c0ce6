"""A FastAPI app with the bridge mounted at /realtime, in one process (in-memory backend):

    BRIDGE_PUBLIC_URL=http://127.0.0.1:8000/realtime uvicorn examples.fastapi_app.app:app --port 8000

`POST /api/summarize {"text": ...}` is the app's own route: it triggers the `summarize` task with the
SDK and returns what the page needs to watch the run, `{runId, publicAccessToken}`, and the URL the
editor's tool posts its decision to, `approvalUrl`. The page watches through the mount:
`useRealtimeRun(runId, {accessToken, baseURL: "http://127.0.0.1:8000/realtime"})`, or the
WebSocket at ws://127.0.0.1:8000/realtime/ws.
"""

from __future__ import annotations

from fastapi import FastAPI
from pydantic import BaseModel, Field

from bridge import wait
from bridge.asgi import BridgeApp
from examples.summaries import summarize

realtime = BridgeApp()  # runs the tasks imported above in this process
app = FastAPI(lifespan=realtime.lifespan)  # a mounted app's lifespan never runs by itself
app.mount("/realtime", realtime)


class SummarizeRequest(BaseModel):
    text: str = Field(min_length=1, max_length=100_000)


@app.post("/api/summarize")
async def start_summary(request: SummarizeRequest) -> dict[str, str]:
    # Your app decides who may start one and who approves: here anyone may.
    approval = await wait.create_token(timeout="1h")
    handle = await summarize.trigger({"text": request.text, "approvalToken": approval.id})
    return {"runId": handle.id, "publicAccessToken": handle.public_access_token, "approvalUrl": approval.url}
