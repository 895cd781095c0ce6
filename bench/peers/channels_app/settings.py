"""The smallest Django project Channels needs: no database, no apps but channels."""

import os

SECRET_KEY = "bench-only"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["channels"]
ASGI_APPLICATION = "bench.peers.channels_app.asgi.application"
DATABASES: dict[str, object] = {}
USE_TZ = True
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        # redis-py's 5 s socket timeout equals channels_redis's blocking read and kills idle consumers
        # (django/channels_redis#422): raised. Capacity stays at its default (100), as users run it.
        "CONFIG": {"hosts": [{"address": os.environ.get("BENCH_REDIS_URL", ""), "socket_timeout": 60}]},
    }
}
