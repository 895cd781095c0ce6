"""Django Channels + channels_redis (groups), run under uvicorn: `/ws/X` joins group X."""
