"""The bridge's WebSocket protocol (docs/protocol.md): many subscriptions over one connection.

- `protocol.py`: constants, frame builders and field validation;
- `outbox.py`: the bounded send queue, coalescing per (topic, run), with stream flow control (no I/O);
- `subscriptions.py`: feed and stream subscriptions, what authorizes them, the stream pumps;
- `dispatch.py`: one received frame, handled by its type;
- `connection.py`: the glue — receive loop, sender task, subscription lifecycle, close codes.
"""
