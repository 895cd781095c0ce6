"""`realtime-bridge serve` and `realtime-bridge worker`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from dataclasses import replace

from starlette.applications import Starlette

from bridge.config import DEV_SECRET_KEY_PREFIX, Settings
from bridge.durations import parse_duration_seconds
from bridge.errors import BridgeError
from bridge.worker.registry import default_registry, load_tasks

log = logging.getLogger("bridge")
SHUTDOWN_GRACE_SECONDS = 5


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        help="use Redis (any number of processes) instead of the in-memory backend: redis://host:port/0, or a "
        "Redis Cluster, redis+cluster://host:port[,host:port...]; default $BRIDGE_REDIS_URL",
    )
    parser.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or file to register its @task functions (repeatable)",
    )
    parser.add_argument("--concurrency", type=int, help="runs executed at once by this process's worker (default 10)")
    parser.add_argument(
        "--max-attempts",
        type=int,
        help="attempts of a task without a retry policy of its own (default $BRIDGE_MAX_ATTEMPTS or 3)",
    )
    parser.add_argument(
        "--wait-hold",
        type=_duration,
        help="how long a wait keeps its run in this worker before parking it (default $BRIDGE_WAIT_HOLD or 2s)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=_duration,
        help="on SIGTERM, how long executing runs get to reach their next durable step before they are handed "
        "back (default $BRIDGE_SHUTDOWN_GRACE or 30s)",
    )


def _duration(value: str) -> float:
    try:
        return parse_duration_seconds(value if value[-1:].isalpha() else float(value))
    except (ValueError, BridgeError) as exc:
        raise argparse.ArgumentTypeError(f'{value!r} is not a duration like "30s", "2m" or seconds') from exc


def warn_if_development_key(settings: Settings) -> None:
    if settings.secret_key.startswith(DEV_SECRET_KEY_PREFIX) and "BRIDGE_SECRET_KEY" not in os.environ:
        log.warning("BRIDGE_SECRET_KEY is not set: using a random development key, %s", settings.secret_key)


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(
        redis_url=args.redis_url,
        worker_concurrency=args.concurrency,
        default_max_attempts=args.max_attempts,
        wait_hold_seconds=args.wait_hold,
        shutdown_grace_seconds=args.shutdown_grace,
    )
    if not 1 <= settings.default_max_attempts <= settings.limits.max_attempts:
        sys.exit(f"realtime-bridge: --max-attempts / BRIDGE_MAX_ATTEMPTS is 1 to {settings.limits.max_attempts}")
    if settings.redis_wait_replicas < 0:
        sys.exit("realtime-bridge: BRIDGE_REDIS_WAIT_REPLICAS is 0 or more")
    warn_if_development_key(settings)
    return settings


def with_public_url(settings: Settings, host: str, port: int) -> Settings:
    """Without BRIDGE_PUBLIC_URL, callback URLs point at the address this process serves on."""
    if "BRIDGE_PUBLIC_URL" in os.environ:
        return settings
    if host in ("0.0.0.0", "::", ""):  # every interface: the loopback one is the address that surely works here
        log.warning("BRIDGE_PUBLIC_URL is not set: wait token callback URLs will point at 127.0.0.1:%d", port)
        host = "127.0.0.1"
    elif ":" in host:
        host = f"[{host}]"
    return replace(settings, public_url=f"http://{host}:{port}")


def run_server(app: Starlette, settings: Settings, host: str, port: int) -> None:
    """Serves `app` with uvicorn, with the bridge's frame limit and a bounded graceful shutdown."""
    import uvicorn

    uvicorn.run(
        app,
        host=host,
        port=port,
        ws_max_size=settings.limits.max_frame_bytes,
        log_level="info",
        proxy_headers=False,
        # Held long-polls and open streams would otherwise delay a restart until they end by themselves.
        timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
    )


def serve(args: argparse.Namespace) -> None:
    from bridge.server.app import create_app

    for spec in args.tasks:
        load_tasks(spec)
    settings = with_public_url(_settings(args), args.host, args.port)
    run_server(create_app(settings, registry=default_registry if args.tasks else None), settings, args.host, args.port)


def worker(args: argparse.Namespace) -> None:
    from bridge.runtime import state
    from bridge.runtime.core import Bridge
    from bridge.worker.executor import Worker

    if not args.tasks:
        sys.exit("realtime-bridge worker: give --tasks MODULE_OR_FILE")
    for spec in args.tasks:
        load_tasks(spec)
    settings = _settings(args)
    if not settings.redis_url:
        sys.exit("realtime-bridge worker: needs --redis-url (with the in-memory backend, `serve --tasks` runs tasks)")

    async def main() -> None:
        bridge = Bridge(settings)
        await bridge.start()
        state.use(bridge)
        # Before the worker claims anything (and logs that it runs): from then on a SIGTERM drains it.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        runner = Worker(bridge, default_registry)
        await runner.start()
        log.info(
            "worker %s running %s with concurrency %d", runner.id, ", ".join(default_registry.ids), runner.concurrency
        )
        await stop.wait()
        await runner.stop()
        await bridge.stop()

    asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="realtime-bridge", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the bridge server (and, with --tasks, a worker)")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=8787)
    _common(serve_parser)
    serve_parser.set_defaults(handler=serve)
    worker_parser = commands.add_parser("worker", help="run tasks from the Redis queue")
    _common(worker_parser)
    worker_parser.set_defaults(handler=worker)
    args = parser.parse_args(argv)
    args.handler(args)


if __name__ == "__main__":
    main()
