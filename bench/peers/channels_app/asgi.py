"""The ASGI application: one consumer class; `group_send(X, {"type": "bench.message", "text": ...})` reaches
every connection at `/ws/X`."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers.channels_app.settings")

import django

django.setup()

from channels.generic.websocket import AsyncWebsocketConsumer  # type: ignore[import-not-found]  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # type: ignore[import-not-found]  # noqa: E402
from django.urls import path  # type: ignore[import-not-found]  # noqa: E402


class Feed(AsyncWebsocketConsumer):  # type: ignore[misc]
    async def connect(self) -> None:
        self.group = self.scope["url_route"]["kwargs"]["channel"]
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()

    async def disconnect(self, code: int) -> None:
        await self.channel_layer.group_discard(self.group, self.channel_name)

    async def bench_message(self, event: dict[str, str]) -> None:
        await self.send(text_data=event["text"])


application = ProtocolTypeRouter({"websocket": URLRouter([path("ws/<str:channel>", Feed.as_asgi())])})
