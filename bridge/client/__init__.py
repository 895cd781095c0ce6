"""How the SDK reaches a bridge: its `Transport` (`transport.py`), in this process (`local.py`) or over
the bridge's HTTP API and WebSocket (`remote.py`), picked by `configure` (`state.py`).

Calls a task makes always go to the bridge executing it; only calls from outside a task (a web backend,
a script) follow `configure`.
"""
