"""The HTTP and WebSocket server: our WebSocket protocol and the official Trigger.dev HTTP routes."""
