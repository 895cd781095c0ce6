"""Django with the bridge mounted at /realtime, in one process (in-memory backend):

    BRIDGE_PUBLIC_URL=http://127.0.0.1:8000/realtime uvicorn examples.django_app.asgi:application --port 8000

Django's ASGI handler serves HTTP only, and no lifespan: `mount` sends /realtime (the bridge's
WebSocket included) to the bridge and everything else to Django, and its lifespan starts the bridge
and the worker running the tasks.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

from bridge.asgi import BridgeApp, mount

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_app.settings")

django_app = get_asgi_application()
realtime = BridgeApp(tasks=["examples.summaries"])  # registered before the worker starts
application = mount(django_app, "/realtime", realtime)
