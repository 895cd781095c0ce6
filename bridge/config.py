"""Settings and the documented limits, read once from the environment."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field, replace

from bridge.durations import parse_duration_seconds

DEV_SECRET_KEY_PREFIX = "tr_dev_"
# HS256 signs with the key: RFC 7518 asks for at least the hash's size (PyJWT warns below it).
MIN_SECRET_KEY_BYTES = 32
MAKE_SECRET_KEY = "python -c \"import secrets; print('tr_prod_' + secrets.token_hex(32))\""


class ConfigError(ValueError):
    """A setting the bridge cannot start with; the message says what to change."""


@dataclass(frozen=True)
class Limits:
    """Every bound the bridge enforces; docs/limits.md lists them with their reasons."""

    max_payload_bytes: int = 1024 * 1024  # metadata, an input value, a step's result, a token's data, encoded
    # A trigger payload or a run's output, encoded (the official limit): from packet_threshold_bytes (the official
    # SDK's offload threshold) on, it is stored apart from its run as a packet (bridge/runtime/packets.py).
    max_packet_bytes: int = 10 * 1024 * 1024
    packet_threshold_bytes: int = 128 * 1024
    max_chunk_bytes: int = 1024 * 1024  # one output stream chunk, encoded
    max_streams_per_run: int = 32  # output stream keys of one run
    max_request_bytes: int = 3 * 1024 * 1024  # any HTTP request body
    max_tags_per_run: int = 10
    max_tag_length: int = 128
    max_batch_items: int = 500
    max_tag_feed_runs: int = 1000
    # One client WebSocket frame (uvicorn's ws_max_size): a `send` frame carries an input value of up
    # to max_payload_bytes plus its envelope. Larger frames close the connection with 1009.
    max_frame_bytes: int = 1024 * 1024 + 16 * 1024
    max_control_frame_bytes: int = 64 * 1024  # a subscribe / unsubscribe frame: refused (an error frame) past this
    max_subscriptions_per_connection: int = 100
    send_queue_max_frames: int = 1000  # distinct pending frames per connection after coalescing
    send_queue_max_bytes: int = 8 * 1024 * 1024
    slow_consumer_grace_seconds: float = 5.0  # a full queue this long closes the connection
    max_feed_sessions: int = 10_000  # concurrent Electric long-poll sessions per process
    feed_session_idle_seconds: float = 60.0
    live_poll_hold_seconds: float = 20.0
    update_retries: int = 50  # optimistic-concurrency retries for one run update
    max_wait_token_timeout_seconds: float = 365 * 24 * 3600.0  # a wait token's deadline is at most this far ahead
    max_waiting_runs_per_worker: int = 10_000  # runs suspended in a wait that gave their slot back, per worker
    max_journal_entries: int = 10_000  # durable steps one run records (docs/durability.md)
    max_attempts: int = 100  # the most a retry policy may ask for


@dataclass(frozen=True)
class Settings:
    secret_key: str
    redis_url: str | None = None
    retention_seconds: float = 7 * 24 * 3600
    key_prefix: str = "rb"
    worker_concurrency: int = 10
    lease_seconds: float = 15.0  # a worker that stops heartbeating for this long is presumed dead
    cors_origins: tuple[str, ...] = ("*",)
    # Where browsers and webhooks reach the bridge: the base of wait tokens' callback URLs.
    public_url: str = "http://127.0.0.1:8787"
    # Durable runs (docs/durability.md): attempts of a task without a retry policy of its own; how long a
    # wait keeps its run in the worker's memory before it parks (holding no process) until it resumes;
    # how long a stopping worker lets executing runs reach their next durable step.
    default_max_attempts: int = 3
    wait_hold_seconds: float = 2.0
    shutdown_grace_seconds: float = 30.0
    metrics_token: str | None = None  # when set, /metrics wants it as a Bearer token
    # Redis replicas that must have an acknowledged write (run, stream chunk, input, journal entry, wait
    # token, queue entry) before it is acknowledged: 1 keeps them through a failover (docs/deployment.md).
    redis_wait_replicas: int = 0
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        size = len(self.secret_key.encode())
        if size < MIN_SECRET_KEY_BYTES:
            raise ConfigError(
                f"the secret key (BRIDGE_SECRET_KEY) is {size} bytes; it needs at least {MIN_SECRET_KEY_BYTES}. "
                f"Make one with: {MAKE_SECRET_KEY}"
            )

    @classmethod
    def from_env(cls, **overrides: object) -> Settings:
        """The settings from BRIDGE_* variables, `overrides` (those not None) winning. Without a secret key,
        the in-memory backend makes a development key; with Redis every process must share one, so
        a missing key is a ConfigError."""
        env = os.environ
        given = {k: v for k, v in overrides.items() if v is not None}
        redis_url = given.pop("redis_url", None) or env.get("BRIDGE_REDIS_URL") or None
        secret_key = given.pop("secret_key", None) or env.get("BRIDGE_SECRET_KEY")
        if not secret_key and redis_url:
            raise ConfigError(
                "BRIDGE_SECRET_KEY is not set: with Redis, every serve and worker process needs the same key "
                f"(it signs tokens and callback URLs). Make one with: {MAKE_SECRET_KEY}"
            )
        settings = cls(
            secret_key=str(secret_key or development_secret_key()),
            redis_url=str(redis_url) if redis_url else None,
            retention_seconds=parse_duration_seconds(env.get("BRIDGE_RETENTION", "7d")),
            key_prefix=env.get("BRIDGE_KEY_PREFIX", "rb"),
            worker_concurrency=int(env.get("BRIDGE_WORKER_CONCURRENCY", "10")),
            lease_seconds=float(env.get("BRIDGE_LEASE_SECONDS", "15")),
            cors_origins=tuple(o.strip() for o in env.get("BRIDGE_CORS_ORIGINS", "*").split(",") if o.strip()),
            public_url=env.get("BRIDGE_PUBLIC_URL", "http://127.0.0.1:8787").rstrip("/"),
            default_max_attempts=int(env.get("BRIDGE_MAX_ATTEMPTS", "3")),
            wait_hold_seconds=parse_duration_seconds(env.get("BRIDGE_WAIT_HOLD", "2s")),
            shutdown_grace_seconds=parse_duration_seconds(env.get("BRIDGE_SHUTDOWN_GRACE", "30s")),
            metrics_token=env.get("BRIDGE_METRICS_TOKEN") or None,
            redis_wait_replicas=int(env.get("BRIDGE_REDIS_WAIT_REPLICAS", "0")),
        )
        return replace(settings, **given)  # type: ignore[arg-type]


def development_secret_key() -> str:
    """A random key for one in-memory process: nothing it signs is valid anywhere else."""
    return DEV_SECRET_KEY_PREFIX + secrets.token_hex(MIN_SECRET_KEY_BYTES // 2)
