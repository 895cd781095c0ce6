"""Big payloads and outputs as packets (bridge/runtime/packets.py): stored apart from their run from 128 KiB
on, up to 10 MiB; uploaded first by a remote SDK (as by the official Node SDK: tests/test_official_client.py);
read back by the task, `runs.retrieve` and the official routes' presigned URLs. On both backends."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import httpx
import orjson
import pytest

from bridge import runs, tasks
from bridge.client.transport import Transport
from bridge.config import Settings
from bridge.errors import PayloadTooLargeError
from bridge.models import PACKET_TYPE, RunStatus
from bridge.runtime import packets
from tests.conftest import SECRET_KEY, RunningServer, serving
from tests.support.helpers import bearer, server_with, token, until_final

BIG = {"blob": "x" * 200_000}  # over the 128 KiB threshold, as payload and as echo's output


async def test_a_big_payload_and_output_are_packets_the_task_retrieve_and_official_routes_read(
    server: RunningServer, http: httpx.AsyncClient
) -> None:
    handle = await tasks.trigger("echo", BIG)
    followed = await until_final(handle.id)  # a feed carries a packet's path, not its value
    assert followed.status is RunStatus.COMPLETED
    assert followed.payload is None and followed.payload_packet == f"{handle.id}/payload.json"
    assert followed.output is None and followed.output_packet is not None
    run = await runs.retrieve(handle.id)
    assert run.payload == BIG and run.output == {"echo": BIG}

    reader = bearer(token(f"read:runs:{handle.id}"))
    retrieved = (await http.get(f"/api/v3/runs/{handle.id}", headers=reader)).json()
    assert "payload" not in retrieved and "output" not in retrieved
    for field, expected in (("payload", BIG), ("output", {"echo": BIG})):
        packet = await http.get(retrieved[f"{field}PresignedUrl"])  # no credentials: the URL is signed
        assert packet.status_code == 200 and packet.headers["content-type"] == "application/json"
        assert orjson.loads(packet.content) == expected
        url = (await http.get(f"/api/v1/runs/{handle.id}/packets/{field}", headers=reader)).json()["presignedUrl"]
        assert orjson.loads((await http.get(url)).content) == expected
    feed = await http.get(f"/realtime/v1/runs/{handle.id}", params={"offset": "-1"}, headers=reader)
    row = feed.json()[0]["value"]
    assert row["payload"] == followed.payload_packet and row["payloadType"] == PACKET_TYPE
    assert row["output"] == followed.output_packet and row["outputType"] == PACKET_TYPE

    url = retrieved["payloadPresignedUrl"]
    for tampered in (url[:-1] + ("0" if url[-1] != "0" else "1"), url.split("?")[0]):
        assert (await http.get(tampered)).status_code == 403
    assert (await http.put(url, content=b"{}")).status_code == 403  # a download URL uploads nothing
    small = await tasks.trigger("echo", 1)
    other = bearer(token(f"read:runs:{small.id}"))
    assert (await http.get(f"/api/v1/runs/{handle.id}/packets/payload", headers=other)).status_code == 403
    small_reader = bearer(token(f"read:runs:{small.id}"))
    for field in ("payload", "nope"):  # a payload kept in its run has no packet
        missing = await http.get(f"/api/v1/runs/{small.id}/packets/{field}", headers=small_reader)
        assert missing.status_code == 404


async def test_a_remote_sdk_uploads_a_big_payload_first_and_retrieve_reads_the_packets(remote: Transport) -> None:
    handle = await tasks.trigger("echo", BIG)
    followed = await until_final(handle.id)
    assert followed.payload_packet is not None and followed.payload_packet.startswith("packet_")
    run = await runs.retrieve(handle.id)
    assert run.status is RunStatus.COMPLETED and run.payload == BIG and run.output == {"echo": BIG}
    batch = await tasks.batch_trigger("echo", [{"payload": BIG}, {"payload": 1}])
    outputs = [(await runs.retrieve((await until_final(item.id)).id)).output for item in batch.runs]
    assert outputs == [{"echo": BIG}, {"echo": 1}]


async def test_the_packet_routes_refuse_what_they_cannot_store(
    backend_settings: Settings,
) -> None:
    limit = 300_000
    async with server_with(backend_settings, max_packet_bytes=limit) as running:
        # The SDK's payloads and outputs: up to the limit encoded.
        with pytest.raises(PayloadTooLargeError, match=f"the limit is {limit}"):
            await tasks.trigger("echo", "x" * (limit - 1))
        at_limit = await tasks.trigger("echo", "x" * (limit - 2))  # a JSON string: two quotes
        failed = await until_final(at_limit.id)  # echo wraps it: the output is over the limit
        assert failed.status is RunStatus.FAILED and failed.error is not None
        assert failed.error.name == "PayloadTooLargeError"

        secret = bearer(SECRET_KEY)
        async with httpx.AsyncClient(base_url=running.url) as http:
            name = quote("trigger/p1/payload.json", safe="")
            public = bearer(token("write:all"))
            assert (await http.put(f"/api/v2/packets/{name}", headers=public)).status_code == 401
            answer = (await http.put(f"/api/v2/packets/{name}", headers=secret)).json()
            path, url = answer["storagePath"], answer["presignedUrl"]
            assert path.startswith("packet_") and path.endswith("/trigger/p1/payload.json")
            too_big = await http.put(url, content=b"x" * (limit + 1), headers={"content-type": "application/json"})
            assert too_big.status_code == 413
            odd_type = await http.put(url, content=b"x", headers={"content-type": "image/png"})
            assert odd_type.status_code == 400
            superjson = orjson.dumps({"json": {"uploaded": True}})
            stored = await http.put(url, content=superjson, headers={"content-type": "application/super+json"})
            assert stored.status_code == 200

            async def trigger(payload: str) -> httpx.Response:
                body: dict[str, Any] = {"payload": payload, "options": {"payloadType": PACKET_TYPE}}
                return await http.post("/api/v1/tasks/echo/trigger", json=body, headers=secret)

            assert (await trigger("packet_unknown/payload.json")).status_code == 400
            assert (await trigger("")).status_code == 400
            triggered = await trigger(path)
            assert triggered.status_code == 200, triggered.text
            run = await until_final(triggered.json()["id"])
    assert run.status is RunStatus.COMPLETED and run.payload_packet == path
    assert run.output == {"echo": {"uploaded": True}}  # the task got superjson's `json` part


async def test_packet_names_urls_and_packets_expire(
    backend_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    retention = 0.5
    async with serving(replace(backend_settings, retention_seconds=retention)) as running:
        secret = bearer(SECRET_KEY)
        async with httpx.AsyncClient(base_url=running.url) as http:
            too_long = await http.put("/api/v2/packets/" + "n" * (packets.MAX_FILENAME_LENGTH + 1), headers=secret)
            assert too_long.status_code == 400
            with monkeypatch.context() as patch:
                patch.setattr(packets, "PRESIGNED_URL_SECONDS", -1)
                stale = (await http.put("/api/v2/packets/p.json", headers=secret)).json()["presignedUrl"]
            assert (await http.put(stale, content=b"1")).status_code == 403
            answer = (await http.put("/api/v2/packets/p.json", headers=secret)).json()
            assert (await http.put(answer["presignedUrl"], content=b"1")).status_code == 200
            await asyncio.sleep(retention)  # the packet's life: the retention after it was stored
            body = {"payload": answer["storagePath"], "options": {"payloadType": PACKET_TYPE}}
            gone = await http.post("/api/v1/tasks/echo/trigger", json=body, headers=secret)
    assert gone.status_code == 400 and "Packet not found" in gone.json()["error"]
