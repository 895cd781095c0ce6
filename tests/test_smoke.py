"""A run triggered through the SDK, watched over the WebSocket, on both backends."""

from __future__ import annotations

import orjson
import websockets

from bridge import runs, tasks
from tests.conftest import RunningServer


async def test_run_goes_queued_executing_completed_over_websocket(server: RunningServer) -> None:
    handle = await tasks.trigger("progress", {"steps": 2}, tags=["user:1"])
    async with websockets.connect(server.ws_url) as ws:
        welcome = orjson.loads(await ws.recv())
        assert welcome["type"] == "welcome"
        await ws.send(
            orjson.dumps(
                {
                    "type": "subscribe",
                    "id": "s1",
                    "feed": "run",
                    "runId": handle.id,
                    "token": handle.public_access_token,
                }
            ).decode()
        )
        seen: dict[int, dict] = {}
        while True:
            frame = orjson.loads(await ws.recv())
            runs_in_frame = frame["runs"] if frame["type"] == "snapshot" else [frame["run"]]
            for run in runs_in_frame:
                seen[run["version"]] = run
            if any(r["status"] == "COMPLETED" for r in seen.values()):
                break
    final = seen[max(seen)]
    assert final["output"] == {"steps": 2}
    assert final["metadata"] == {"progress": 1.0}
    assert final["finishedAt"] is not None
    assert (await runs.retrieve(handle.id)).status.value == "COMPLETED"
