"""Which transport the SDK's calls from outside a task use, chosen by `configure` or the environment.

In order: `configure(url=...)`; else the process's own bridge, when one was configured or handed over
(`bridge.runtime.state`: the server or worker this code runs in); else `BRIDGE_URL` with
`BRIDGE_SECRET_KEY`; else a bridge of the SDK's own from the environment (`BRIDGE_REDIS_URL`, or in memory).
A task's calls always go to the bridge executing it.
"""

from __future__ import annotations

import os

from bridge.client.local import LocalTransport
from bridge.client.remote import DEFAULT_TIMEOUT_SECONDS, RemoteTransport
from bridge.client.transport import Transport
from bridge.errors import ValidationError
from bridge.runtime import state as local_state
from bridge.worker.context import current_run_scope

_remote: RemoteTransport | None = None  # configured explicitly
_from_env: RemoteTransport | None = None  # made from BRIDGE_URL


def configure(
    *,
    url: str | None = None,
    secret_key: str | None = None,
    redis_url: str | None = None,
    retention: str | None = None,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Transport:
    """Points the SDK at a bridge. `url`: a running bridge's address (`realtime-bridge serve`), reached over
    HTTP and its WebSocket with its secret key (`secret_key`, else `BRIDGE_SECRET_KEY`); each request within
    `timeout` seconds. Without `url`: a bridge of the SDK's own in this process, on Redis (`redis_url`) to
    reach bridges and workers elsewhere, else in memory. Returns the transport; `await transport.aclose()`
    closes a remote one's connections."""
    global _remote
    if url is None:
        _remote = None
        return LocalTransport(local_state.configure(secret_key=secret_key, redis_url=redis_url, retention=retention))
    if redis_url is not None or retention is not None:
        raise ValidationError("configure(url=...) reaches a running bridge: its Redis and retention are its own")
    _remote = _remote_transport(url, secret_key, timeout)
    return _remote


def _remote_transport(url: str, secret_key: str | None, timeout: float) -> RemoteTransport:
    key = secret_key or os.environ.get("BRIDGE_SECRET_KEY")
    if not key:
        raise ValidationError(f"the bridge at {url} needs its secret key: secret_key=... or BRIDGE_SECRET_KEY")
    if not url.startswith(("http://", "https://")):
        raise ValidationError(f"the bridge's URL starts with http:// or https://, not {url[:40]!r}")
    if not timeout > 0:
        raise ValidationError("timeout is a number of seconds above 0")
    return RemoteTransport(url, key, timeout)


def configured() -> Transport:
    """The transport of the code calling, not started (a local bridge starts with `current`)."""
    global _from_env
    scope = current_run_scope()
    if scope is not None:
        return LocalTransport(scope.bridge)
    if _remote is not None:
        return _remote
    own = local_state.in_use()
    url = os.environ.get("BRIDGE_URL")
    if own is None and url:
        _from_env = _from_env or _remote_transport(url, None, DEFAULT_TIMEOUT_SECONDS)
        return _from_env
    return LocalTransport(own or local_state.configured())


async def current() -> Transport:
    """The transport of the code calling; a local bridge of the SDK's own is started on first use."""
    transport = configured()
    if isinstance(transport, LocalTransport) and current_run_scope() is None:
        await local_state.current()  # starts it once
    return transport
