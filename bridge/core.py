"""`Bridge`: the parts one process needs — settings, broker, hub and run engine — started together."""

from __future__ import annotations

from bridge.backends import create_broker
from bridge.config import Settings
from bridge.engine import RunEngine
from bridge.hub import Hub


class Bridge:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.broker = create_broker(settings)
        self.hub = Hub(self.broker)
        self.engine = RunEngine(self.broker, settings)

    async def start(self) -> None:
        await self.broker.start()

    async def stop(self) -> None:
        await self.broker.stop()
