"""`python -m examples.demo`: the demo on http://127.0.0.1:8787 (HOST and PORT to change it).

In-memory backend by default; BRIDGE_REDIS_URL (and every other BRIDGE_* setting) is honoured.
"""

from __future__ import annotations

import argparse
import logging
import os

import uvicorn

from bridge.config import DEV_SECRET_KEY_PREFIX, Settings
from examples.demo.app import create_demo_app

log = logging.getLogger("demo")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8787")))
    args = parser.parse_args()

    settings = Settings.from_env()
    if settings.secret_key.startswith(DEV_SECRET_KEY_PREFIX) and "BRIDGE_SECRET_KEY" not in os.environ:
        log.warning("BRIDGE_SECRET_KEY is not set: using a random development key, %s", settings.secret_key)
    log.info("backend: %s", "redis" if settings.redis_url else "in-memory")
    log.info("the demo: http://%s:%d/", args.host, args.port)
    uvicorn.run(
        create_demo_app(settings),
        host=args.host,
        port=args.port,
        ws_max_size=settings.limits.max_frame_bytes,
        log_level="info",
        proxy_headers=False,
    )


if __name__ == "__main__":
    main()
