"""Trigger a task on a running bridge over HTTP and watch its run over the WebSocket protocol.

    .venv/bin/python examples/watch_run.py draft-email '{"to": "a@b.c"}'

Uses the bridge's secret key (BRIDGE_SECRET_KEY; `scripts/run` sets a development one) to
trigger, then the run's own public access token to subscribe, as a page would.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import urllib.request

import websockets


def trigger(base_url: str, secret_key: str, task_id: str, payload: object) -> tuple[str, str]:
    request = urllib.request.Request(
        f"{base_url}/api/v1/tasks/{task_id}/trigger",
        data=json.dumps({"payload": payload}).encode(),
        headers={"Authorization": f"Bearer {secret_key}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["id"], response.headers["x-trigger-jwt"]


async def watch(base_url: str, run_id: str, token: str) -> None:
    async with websockets.connect(base_url.replace("http", "ws", 1) + "/ws") as ws:
        await ws.send(json.dumps({"type": "subscribe", "id": "run", "feed": "run", "runId": run_id, "token": token}))
        newest = 0
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "error":
                raise SystemExit(f"error: {frame['code']}: {frame['message']}")
            runs = frame.get("runs") or ([frame["run"]] if "run" in frame else [])
            for run in runs:
                if run["version"] <= newest:
                    continue  # an older state than one already shown
                newest = run["version"]
                print(f"v{run['version']:<3} {run['status']:<10} metadata={json.dumps(run['metadata'])}")
                if run["finishedAt"]:
                    print("output:", json.dumps(run["output"]), "error:", json.dumps(run["error"]))
                    return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task_id")
    parser.add_argument("payload", nargs="?", default="{}", help="JSON")
    parser.add_argument("--url", default="http://127.0.0.1:8787")
    args = parser.parse_args()
    secret_key = os.environ.get("BRIDGE_SECRET_KEY", "tr_dev_demo_secret_key_for_local_use_only")
    run_id, token = trigger(args.url, secret_key, args.task_id, json.loads(args.payload))
    print("triggered", run_id)
    asyncio.run(watch(args.url, run_id, token))


if __name__ == "__main__":
    main()
