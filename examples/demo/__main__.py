"""`python -m examples.demo`: the demo on http://127.0.0.1:8787 (HOST and PORT to change it).

In-memory backend by default; BRIDGE_REDIS_URL (and every other BRIDGE_* setting) is honoured.
With --no-worker (Redis only), the server runs no task: start the worker yourself, e.g.
`realtime-bridge worker --tasks examples/demo/tasks.py`, and stop or restart it independently.
"""

from __future__ import annotations

import argparse
import logging
import os

from bridge.cli import CliError, run_server, with_public_url
from bridge.config import ConfigError, Settings
from bridge.logs import configure_logging, log_settings
from examples.demo.app import create_demo_app

log = logging.getLogger("demo")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.demo", description=__doc__)
    try:
        level, log_format = log_settings()  # BRIDGE_LOG_LEVEL and BRIDGE_LOG_FORMAT, as for realtime-bridge
    except ConfigError as exc:
        parser.error(str(exc))
    configure_logging(level, log_format)
    log.setLevel(level.upper())
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8787")))
    parser.add_argument("--no-worker", action="store_true", help="run no tasks here (a separate worker does)")
    args = parser.parse_args()

    try:
        settings = with_public_url(Settings.from_env(), args.host, args.port)
    except ConfigError as exc:  # e.g. Redis without BRIDGE_SECRET_KEY
        parser.error(str(exc))
    if args.no_worker and not settings.redis_url:
        parser.error("--no-worker needs BRIDGE_REDIS_URL: a separate worker only sees the runs through Redis")
    log.info("backend: %s", "redis" if settings.redis_url else "in-memory")
    log.info("the demo: http://%s:%d/", args.host, args.port)
    try:
        run_server(lambda _port: create_demo_app(settings, worker=not args.no_worker), settings, args.host, args.port)
    except (CliError, ConfigError) as exc:  # e.g. the port in use, a bad Redis URL
        parser.error(str(exc))


if __name__ == "__main__":
    main()
