"""`Bridge`: the parts one process needs — settings, broker, hub, run engine, feeds, streams, batches, wait
tokens and child runs — started together, on one clock."""

from __future__ import annotations

from bridge.backends import create_broker
from bridge.clock import Clock
from bridge.config import Settings
from bridge.metrics import Metrics
from bridge.runtime.batches import Batches
from bridge.runtime.children import ChildRuns
from bridge.runtime.engine import RunEngine
from bridge.runtime.feeds import Feeds
from bridge.runtime.hub import Hub
from bridge.runtime.output_streams import OutputStreams
from bridge.runtime.waitpoints import Waitpoints
from bridge.tracing import notice_provider


class Bridge:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()  # what every deadline is measured on (a test's may skip ahead)
        self.metrics = Metrics()
        self.broker = create_broker(settings, self.metrics)
        self.hub = Hub(self.broker, self.metrics)
        self.engine = RunEngine(self.broker, settings, self.metrics, self.clock)
        self.feeds = Feeds(self.hub, self.broker)
        self.output_streams = OutputStreams(self.hub, self.broker)
        self.batches = Batches(self.engine)
        self.waitpoints = Waitpoints(self.broker, self.hub, settings, self.engine.resume_waiting_runs, self.clock)
        self.children = ChildRuns(self.engine, self.waitpoints)
        self.engine.timer_at = self.waitpoints.timer_at  # delays and TTLs fire as wait token timeouts

    async def start(self) -> None:
        notice_provider()
        await self.broker.start()
        self.waitpoints.timer.start()

    async def stop(self) -> None:
        await self.waitpoints.timer.stop()
        await self.broker.stop()

    async def read_backend_gauges(self) -> None:
        """Reads, for a scrape, the gauges only the backend knows; they stay unset should a read fail."""
        readings = self.metrics.backend
        readings.queue_depths = readings.waiting_tokens = None
        readings.queue_depths = await self.broker.queue_depths()
        readings.waiting_tokens = await self.broker.waiting_waitpoint_count()
