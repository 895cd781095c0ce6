"""The bridge's WebSocket protocol (docs/protocol.md): many subscriptions over one connection.

- `protocol.py`: constants, frame builders and field validation;
- `outbox.py`: the bounded send queue, coalescing per (topic, run), with stream flow control (no I/O);
- `transport.py`: the raw frame path: frames prepared once, written straight to the transport;
- `subscriptions.py`: feed and stream subscriptions, what authorizes them, the stream pumps;
- `dispatch.py`: one received frame, handled by its type;
- `connection.py`: the glue — write or queue, the stall timer, receive loop, subscription lifecycle, close codes.
"""
