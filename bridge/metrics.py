"""Every Prometheus metric one bridge process exports (docs/observability.md), in a registry of its own.

One `Metrics` per `Bridge`, never the global default registry: tests run many apps in one process, and a
user's app mounting the bridge keeps its own metrics apart. Label values come from small fixed sets
(protocols, feed kinds, statuses, route templates) or from the registered task ids; never a run id, a
tag or a token. Label sets known in advance are bound once here, so a hot path adds to a child without a
label lookup, and each series exists (at 0) from the start. Gauges of state a part keeps anyway are read
when scraped (`set_function`, `WorkerSlots`); the hot paths add once per batch, not per item.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

from bridge.models import LEGAL_TRANSITIONS, RunStatus

NEW_RUN = "none"  # the `from` label of a run's first state, when it is triggered
WEBSOCKET_FEEDS = ("run", "tags", "batch", "stream")
ELECTRIC_FEEDS = ("run", "tags", "batch")


class SlotHolder(Protocol):
    """A worker, as its slot gauge sees it."""

    @property
    def concurrency(self) -> int: ...

    @property
    def busy_slots(self) -> int: ...


class WorkerSlots:
    """`bridge_worker_slots{state}`: summed over the workers running in this process, read when scraped."""

    def __init__(self) -> None:
        self._workers: set[SlotHolder] = set()

    def track(self, worker: SlotHolder) -> None:
        self._workers.add(worker)

    def untrack(self, worker: SlotHolder) -> None:
        self._workers.discard(worker)

    def collect(self) -> Iterator[Metric]:
        workers = tuple(self._workers)
        busy = sum(worker.busy_slots for worker in workers)
        family = GaugeMetricFamily(
            "bridge_worker_slots",
            "Run slots of this process's workers, busy (executing a run) or free",
            labels=["state"],
        )
        family.add_metric(["busy"], busy)
        family.add_metric(["free"], sum(worker.concurrency for worker in workers) - busy)
        yield family


class BackendReadings:
    """`bridge_queue_depth{task}` and `bridge_wait_tokens_waiting`: what only the backend knows, read for each
    scrape (`Bridge.read_backend_gauges`); left out of a scrape whose read failed, never stale."""

    def __init__(self) -> None:
        self.queue_depths: dict[str, int] | None = None
        self.waiting_tokens: int | None = None

    def collect(self) -> Iterator[Metric]:
        if self.queue_depths is not None:
            family = GaugeMetricFamily(
                "bridge_queue_depth", "Runs queued for a worker and not claimed yet, by task", labels=["task"]
            )
            for task_id, depth in sorted(self.queue_depths.items()):
                family.add_metric([task_id], depth)
            yield family
        if self.waiting_tokens is not None:
            yield GaugeMetricFamily(
                "bridge_wait_tokens_waiting", "Wait tokens neither completed nor timed out", value=self.waiting_tokens
            )


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        GCCollector(registry=registry)

        # the servers: connections, subscriptions, what they send, HTTP requests
        connections = Gauge("bridge_connections", "Open client connections", ["protocol"], registry=registry)
        self.websocket_connections = connections.labels("websocket")
        self.sse_connections = connections.labels("sse")
        self.long_polls = connections.labels("long_poll")  # official feed polls held open for changes
        subscriptions = Gauge(
            "bridge_subscriptions", "Open subscriptions, by protocol and feed", ["protocol", "feed"], registry=registry
        )
        self.websocket_subscriptions = {feed: subscriptions.labels("websocket", feed) for feed in WEBSOCKET_FEEDS}
        self.electric_subscriptions = {feed: subscriptions.labels("electric", feed) for feed in ELECTRIC_FEEDS}
        self.sse_subscriptions = subscriptions.labels("sse", "stream")
        frames = Counter("bridge_frames_sent", "Frames sent to clients", ["protocol"], registry=registry)
        sent_bytes = Counter(
            "bridge_sent_bytes", "Bytes of the frames sent to clients", ["protocol"], registry=registry
        )
        self.websocket_frames, self.websocket_bytes = frames.labels("websocket"), sent_bytes.labels("websocket")
        self.sse_frames, self.sse_bytes = frames.labels("sse"), sent_bytes.labels("sse")
        slow = Counter(
            "bridge_slow_consumer_closes",
            "WebSocket connections closed with 4008 (slow consumer), by reason",
            ["reason"],
            registry=registry,
        )
        self.slow_consumer_queue_full = slow.labels("queue_full")
        self.slow_consumer_send_timeout = slow.labels("send_timeout")
        self.http_requests = Counter(
            "bridge_http_requests",
            "HTTP requests answered, by route template, method and status class",
            ["route", "method", "status"],
            registry=registry,
        )

        # the runtime: the hub, runs, output streams; and what only the backend knows, read when scraped
        self.hub_channels = Gauge("bridge_hub_channels", "Channels this process listens to", registry=registry)
        self.hub_resyncs = Counter(
            "bridge_hub_resyncs", "Listeners told to re-read their state after lost notifications", registry=registry
        )
        self.redis_reconnects = Counter(
            "bridge_redis_reconnects", "Redis pub/sub connections re-established after a loss", registry=registry
        )
        self._run_transitions = Counter(
            "bridge_run_transitions",
            'Run status changes this process stored (from="none": triggered)',
            ["from", "to"],
            registry=registry,
        )
        self.run_transition(NEW_RUN, RunStatus.QUEUED, 0)
        for before, targets in LEGAL_TRANSITIONS.items():
            for after in targets:
                self.run_transition(before, after, 0)
        self.stream_chunks = Counter(
            "bridge_stream_appended_chunks", "Output stream chunks this process stored", registry=registry
        )
        self.stream_bytes = Counter(
            "bridge_stream_appended_bytes", "Bytes of the output stream chunks this process stored", registry=registry
        )
        self.backend = BackendReadings()
        registry.register(self.backend)

        # the workers
        self.worker_slots = WorkerSlots()
        registry.register(self.worker_slots)

    def run_transition(self, before: str, after: str, count: int = 1) -> None:
        self._run_transitions.labels(before, after).inc(count)
