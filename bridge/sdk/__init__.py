"""The Python SDK, named after the official one: `tasks`, `runs`, `metadata`, `streams`, `wait`, `auth`."""
