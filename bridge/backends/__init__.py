"""Broker backends: `memory` (one process) and `redis` (any number of processes)."""

from __future__ import annotations

from bridge.backends.base import Broker
from bridge.config import Settings
from bridge.metrics import Metrics


def create_broker(settings: Settings, metrics: Metrics | None = None) -> Broker:
    if settings.redis_url:
        from bridge.backends.redis import RedisBroker

        return RedisBroker(settings, metrics)
    from bridge.backends.memory import MemoryBroker

    return MemoryBroker(settings)
