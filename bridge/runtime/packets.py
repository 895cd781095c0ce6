"""Packets: a payload or an output stored apart from its run, the official API's `application/store`.

A run is rewritten and published whole on every change, so a payload or output of
`limits.packet_threshold_bytes` (128 KiB, the official SDK's offload threshold) or more, JSON-encoded,
is stored once as a packet under a storage path, up to `limits.max_packet_bytes` (10 MiB), and the run
carries the path (`Run.payload_packet`, `Run.output_packet`). The official Node SDK uploads such a
payload itself before it triggers (`PUT /api/v2/packets/<name>` answers a presigned URL to upload to)
and triggers with the path. Readers get a presigned URL of the packet (`GET
/api/v1/runs/<id>/packets/payload`), or the value (`runs.retrieve`, the worker executing the run).

A packet is kept for the retention after it is stored (a delayed run's payload: plus its delay), and
again from every execution of its run, which reads it.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from bridge.backends.base import KeyValueStore
from bridge.config import Settings
from bridge.errors import ForbiddenError, NotFoundError, PayloadTooLargeError, ValidationError
from bridge.models import JSON_TYPE, PACKET_TYPE, Run, encode_value, new_id, now_ms

SUPER_JSON_TYPE = "application/super+json"
TEXT_TYPE = "text/plain"
DATA_TYPES = frozenset({JSON_TYPE, SUPER_JSON_TYPE, TEXT_TYPE})  # what the official SDK uploads
PRESIGNED_URL_SECONDS = 3600
MAX_FILENAME_LENGTH = 512


@dataclass(frozen=True)
class PacketRef:
    """A payload uploaded as a packet before the trigger (`payloadType: "application/store"`): its path."""

    path: str


def decode_payload(payload: Any, payload_type: Any) -> Any:
    """The value an official client serialised (superjson's `json` part, JSON, or plain text), a `PacketRef`
    for `application/store`; a value that is not a string (curl users, our own clients) as it is."""
    if payload is None:
        return None
    if not isinstance(payload, str):
        return payload
    if payload_type == PACKET_TYPE:
        if not payload:
            raise ValidationError("an application/store payload is the storage path of an uploaded packet")
        return PacketRef(payload)
    return decode_data(payload, payload_type)


def decode_data(data: str | bytes, data_type: Any) -> Any:
    """A serialised value by its type (a media type's parameters, `; charset=utf-8`, aside)."""
    if isinstance(data_type, str):
        data_type = data_type.split(";")[0].strip()
    if data_type == TEXT_TYPE:
        try:
            return data if isinstance(data, str) else data.decode()
        except UnicodeDecodeError as exc:
            raise ValidationError("a text/plain payload is UTF-8 text") from exc
    try:
        decoded = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ValidationError(f"payload is not valid JSON for payloadType {data_type!r}") from exc
    if data_type == SUPER_JSON_TYPE:
        if not isinstance(decoded, dict):
            raise ValidationError('a super+json payload is an object with a "json" field')
        return decoded.get("json")
    return decoded


def _key(path: str) -> str:
    return f"packet:{path}"


class Packets:
    def __init__(self, store: KeyValueStore, settings: Settings) -> None:
        self._store = store
        self._settings = settings
        self._limits = settings.limits

    def encode(self, what: str, value: Any) -> bytes:
        """`value` as JSON, within the packet limit."""
        try:
            encoded = encode_value(value)
        except ValidationError as exc:
            raise ValidationError(f"{what}: {exc.message}") from exc
        if len(encoded) > self._limits.max_packet_bytes:
            raise PayloadTooLargeError(
                f"{what} is {len(encoded)} bytes encoded; the limit is {self._limits.max_packet_bytes}"
            )
        return encoded

    def is_big(self, encoded: bytes) -> bool:
        """Whether a value this size is stored as a packet rather than in its run."""
        return len(encoded) >= self._limits.packet_threshold_bytes

    def upload_path(self, filename: str) -> str:
        """A new storage path for a packet the client names `filename`: unique, so no upload replaces another."""
        if not 0 < len(filename) <= MAX_FILENAME_LENGTH or any(ord(c) < 32 for c in filename):
            raise ValidationError(f"a packet's name is 1 to {MAX_FILENAME_LENGTH} characters, no control characters")
        return f"{new_id('packet_')}/{filename}"

    async def put(self, path: str, data: bytes, data_type: str, extra_seconds: float = 0.0) -> None:
        if data_type not in DATA_TYPES:
            raise ValidationError(f"a packet's type is one of {', '.join(sorted(DATA_TYPES))}, not {data_type[:80]!r}")
        if len(data) > self._limits.max_packet_bytes:
            raise PayloadTooLargeError(f"a packet is at most {self._limits.max_packet_bytes} bytes")
        ttl = self._settings.retention_seconds + extra_seconds
        await self._store.put_value(_key(path), data_type.encode() + b"\n" + data, ttl)

    async def get(self, path: str, extra_seconds: float | None = None) -> tuple[bytes, str]:
        """(data, type); with `extra_seconds`, the packet is kept that much past the retention from now."""
        keep = None if extra_seconds is None else self._settings.retention_seconds + extra_seconds
        stored = await self._store.get_value(_key(path), keep)
        if stored is None:
            raise NotFoundError(f"Packet not found: {path[:MAX_FILENAME_LENGTH]}")
        data_type, _, data = stored.partition(b"\n")
        return data, data_type.decode()

    async def value(self, path: str) -> Any:
        """The packet's value; reading it keeps it another retention (its run is executing or read)."""
        return decode_data(*await self.get(path, 0.0))

    async def payload_of(self, run: Run) -> Any:
        return run.payload if run.payload_packet is None else await self.value(run.payload_packet)

    async def resolved(self, run: Run) -> Run:
        """The run with its packets' values as `payload` and `output`."""
        output = run.output if run.output_packet is None else await self.value(run.output_packet)
        return replace(run, payload=await self.payload_of(run), output=output)

    # presigned URLs: an upload or download without the secret key, for an hour
    def _signature(self, method: str, path: str, expires: str) -> str:
        message = f"{method} {path} {expires}".encode()
        return hmac.new(self._settings.secret_key.encode(), message, hashlib.sha256).hexdigest()

    def presigned_url(self, method: str, path: str) -> str:
        expires = str(now_ms() + PRESIGNED_URL_SECONDS * 1000)
        query = urlencode({"expires": expires, "signature": self._signature(method, path, expires)})
        return f"{self._settings.public_url}/packets/{quote(path)}?{query}"

    def check_presigned(self, method: str, path: str, expires: str, signature: str) -> None:
        valid = hmac.compare_digest(self._signature(method, path, expires).encode(), signature.encode())
        if not valid or not expires.isdigit() or len(expires) > 16 or int(expires) < now_ms():
            raise ForbiddenError("the packet URL is not valid (a wrong signature, or it expired)")
