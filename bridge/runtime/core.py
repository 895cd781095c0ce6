"""`Bridge`: the parts one process needs — settings, broker, hub, run engine, feeds, streams, batches and
wait tokens — started together, on one clock."""

from __future__ import annotations

from bridge.backends import create_broker
from bridge.clock import Clock
from bridge.config import Settings
from bridge.runtime.batches import Batches
from bridge.runtime.engine import RunEngine
from bridge.runtime.feeds import Feeds
from bridge.runtime.hub import Hub
from bridge.runtime.output_streams import OutputStreams
from bridge.runtime.waitpoints import Waitpoints


class Bridge:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock = clock or Clock()  # what every deadline is measured on (a test's may skip ahead)
        self.broker = create_broker(settings)
        self.hub = Hub(self.broker)
        self.engine = RunEngine(self.broker, settings)
        self.feeds = Feeds(self.hub, self.broker)
        self.output_streams = OutputStreams(self.hub, self.broker)
        self.batches = Batches(self.engine)
        self.waitpoints = Waitpoints(self.broker, self.hub, settings, self.engine.resume_waiting_runs, self.clock)

    async def start(self) -> None:
        await self.broker.start()
        self.waitpoints.timer.start()

    async def stop(self) -> None:
        await self.waitpoints.timer.stop()
        await self.broker.stop()
