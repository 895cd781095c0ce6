"""One subscription over the bridge's WebSocket protocol (docs/protocol.md), for the remote transport.

It connects (tried again like any read), sends `subscribe` and then a `ping`: the bridge handles a
connection's frames in order, so the `pong` means the subscription was accepted, and an `error` frame
before it means it was refused. Until then the call's timeout applies; afterwards the frames come as the
feed changes, for as long as it takes, and the protocol's keepalive pings find a dead connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from bridge.client.errors import remote_error
from bridge.client.retries import retrying
from bridge.errors import BackendUnavailableError

Frame = dict[str, Any]
SUBSCRIPTION_ID = "sdk"  # one subscription per connection
KEEPALIVE_SECONDS = 20.0  # a ping this often, and this long for its answer, else the connection is lost


async def subscription_frames(
    bridge_url: str, secret_key: str, subscribe: Frame, timeout: float
) -> AsyncGenerator[Frame, None]:
    """The frames of one subscription (`subscribe`: its feed's fields) until the caller stops; an `error`
    frame raises, a lost connection raises BackendUnavailableError."""
    ws_url = "ws" + bridge_url.removeprefix("http") + "/ws"

    async def open_connection() -> ClientConnection:
        # No size bound of our own: the bridge bounds what it sends (a snapshot 8 MiB, a chunk 1 MiB).
        return await connect(
            ws_url,
            open_timeout=timeout,
            max_size=None,
            ping_interval=KEEPALIVE_SECONDS,
            ping_timeout=KEEPALIVE_SECONDS,
        )

    try:
        connection = await retrying(open_connection, lambda exc: isinstance(exc, (OSError, TimeoutError)))
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise BackendUnavailableError(f"could not reach the bridge at {bridge_url}: {exc!r}") from exc
    try:
        frame = {"type": "subscribe", "id": SUBSCRIPTION_ID, "token": secret_key, **subscribe}
        await connection.send(orjson.dumps(frame).decode())
        await connection.send(orjson.dumps({"type": "ping", "id": SUBSCRIPTION_ID}).decode())
        accepted = False
        while True:
            async with asyncio.timeout(None if accepted else timeout):
                received: Frame = orjson.loads(await connection.recv())
            kind = received.get("type")
            if kind == "error":
                raise remote_error(received.get("code"), str(received.get("message")), None, bridge_url)
            if kind == "pong":
                accepted = True
            elif kind != "welcome":
                yield received
    except ConnectionClosed as exc:
        raise BackendUnavailableError(f"the bridge at {bridge_url} closed the connection: {exc}") from exc
    except TimeoutError as exc:
        raise BackendUnavailableError(f"the bridge at {bridge_url} did not answer within {timeout:g} s") from exc
    finally:
        await connection.close()
