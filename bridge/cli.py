"""`realtime-bridge serve`, `realtime-bridge worker` and `realtime-bridge testserver` (also `python -m bridge`).

A problem the person starting it can fix (a tasks file that does not load, a bad Redis URL, a missing
or short secret key, a port in use) is one line on stderr and exit code 2; `--debug` shows the traceback.
A Redis that does not answer yet is waited for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from importlib.metadata import version
from typing import NoReturn

from starlette.applications import Starlette

from bridge.config import DEV_SECRET_KEY_PREFIX, ConfigError, Settings
from bridge.durations import parse_duration_seconds
from bridge.errors import BridgeError
from bridge.logs import FORMATS, LEVELS, configure_logging, log_settings
from bridge.supervisor import Supervisor, exit_quietly, workers_count
from bridge.worker.registry import default_registry, load_tasks

log = logging.getLogger("bridge")
SHUTDOWN_GRACE_SECONDS = 5
TEST_HOST = "127.0.0.1"  # a test server is for this machine only
EXIT_USAGE = 2  # argparse's code for a bad command line; the errors below are the same kind of mistake
STOP_MARGIN_SECONDS = 10  # `serve --workers`: past both graces, a stopping worker is killed after this much more


class CliError(Exception):
    """A mistake in how the command was started: printed as one line, exit code 2."""


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis-url",
        help="use Redis (any number of processes) instead of the in-memory backend: redis://host:port/0, or a "
        "Redis Cluster, redis+cluster://host:port[,host:port...]; every process then needs the same "
        "BRIDGE_SECRET_KEY (default: $BRIDGE_REDIS_URL, else in-memory)",
    )
    _tasks(parser)
    parser.add_argument(
        "--concurrency",
        type=int,
        help="runs executed at once by this process's worker (default: $BRIDGE_WORKER_CONCURRENCY or 10)",
    )
    parser.add_argument(
        "--max-attempts",
        type=int,
        help="attempts of a task without a retry policy of its own (default: $BRIDGE_MAX_ATTEMPTS or 3)",
    )
    parser.add_argument(
        "--wait-hold",
        type=_duration,
        help="how long a wait keeps its run in this worker before parking it (default: $BRIDGE_WAIT_HOLD or 2s)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=_duration,
        help="on SIGTERM, how long executing runs get to reach their next durable step before they are handed "
        "back (default: $BRIDGE_SHUTDOWN_GRACE or 30s)",
    )
    _diagnostics(parser)


def _tasks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULE_OR_FILE",
        help="import this module or file to register its @task functions; repeatable (default: none)",
    )


def _diagnostics(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of a startup error (default: one line)"
    )
    parser.add_argument(
        "--log-level", choices=LEVELS, help="the bridge's log level (default: $BRIDGE_LOG_LEVEL or info)"
    )
    parser.add_argument(
        "--log-format",
        choices=FORMATS,
        help="text, or json: one object per line (default: $BRIDGE_LOG_FORMAT or text)",
    )


def _duration(value: str) -> float:
    try:
        return parse_duration_seconds(value if value[-1:].isalpha() else float(value))
    except (ValueError, BridgeError) as exc:
        raise argparse.ArgumentTypeError(f'{value!r} is not a duration like "30s", "2m" or seconds') from exc


def _workers(value: str) -> int:
    try:
        return workers_count(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def warn_if_development_key(settings: Settings) -> None:
    """Called once the port is bound, so that a startup error is the only line the command prints."""
    if settings.secret_key.startswith(DEV_SECRET_KEY_PREFIX) and not os.environ.get("BRIDGE_SECRET_KEY"):
        log.warning(
            "BRIDGE_SECRET_KEY is not set: signing with a random development key, valid until this process "
            "stops; set BRIDGE_SECRET_KEY for tokens that outlive it (required with Redis)"
        )


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env(
        redis_url=args.redis_url,
        worker_concurrency=args.concurrency,
        default_max_attempts=args.max_attempts,
        wait_hold_seconds=args.wait_hold,
        shutdown_grace_seconds=args.shutdown_grace,
    )
    if not 1 <= settings.default_max_attempts <= settings.limits.max_attempts:
        raise CliError(f"--max-attempts / BRIDGE_MAX_ATTEMPTS is 1 to {settings.limits.max_attempts}")
    if settings.redis_wait_replicas < 0:
        raise CliError("BRIDGE_REDIS_WAIT_REPLICAS is 0 or more")
    return settings


def _load(specs: list[str]) -> None:
    for spec in specs:
        try:
            load_tasks(spec)
        except FileNotFoundError as exc:
            raise CliError(f"cannot load tasks from {spec}: no such file ({os.path.abspath(spec)})") from exc
        except Exception as exc:  # the task module's own code: any error it raises (--debug shows where)
            raise CliError(f"cannot load tasks from {spec}: {type(exc).__name__}: {exc}") from exc


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


def listen(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    """The server's socket, bound before anything else starts: a port in use is known at once. `reuse_port`:
    one of several processes' sockets on the port (`serve --workers`)."""
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only then (else ~40 ms per keep-alive response)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:  # OverflowError: a port past 65535
        sock.close()
        if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
            raise CliError(f"port {port} on {host} is in use: stop what listens there or give another --port") from exc
        raise CliError(f"cannot listen on {host}:{port}: {getattr(exc, 'strerror', None) or exc}") from exc
    return sock


async def wait_for_backend(settings: Settings) -> None:
    """With Redis, returns once it answers (logging the wait once); in memory, at once."""
    if settings.redis_url:
        from bridge.backends.redis.startup import wait_until_reachable

        await wait_until_reachable(settings.redis_url)


def run_server(
    make_app: Callable[[int], Starlette],
    settings: Settings,
    host: str,
    port: int,
    on_started: Callable[[int], None] | None = None,
    reuse_port: bool = False,
) -> None:
    """Listens on host:port (see `listen` for `reuse_port`), waits for the backend, then serves the app
    `make_app` builds for the bound port with uvicorn, with the bridge's frame limit and a bounded graceful
    shutdown. `on_started(port)` is called once it accepts connections (its lifespan has run)."""
    import uvicorn

    from bridge.server.websocket.transport import uvicorn_config

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started and on_started is not None:
                on_started(port)

    sock = listen(host, port, reuse_port)
    port = sock.getsockname()[1]  # --port 0: the one the system chose
    with sock:
        warn_if_development_key(settings)
        asyncio.run(wait_for_backend(settings))
        config = uvicorn_config(
            make_app(port),
            settings.limits.max_frame_bytes,
            log_config=None,  # uvicorn logs through the handler configure_logging set up
            proxy_headers=False,
            # Held long-polls and open streams would otherwise delay a restart until they end by themselves.
            timeout_graceful_shutdown=SHUTDOWN_GRACE_SECONDS,
        )
        server = Server(config)
        # uvicorn says where it listens only for a socket of its own
        log.info("serving on http://%s:%d (CTRL+C to stop)", f"[{host}]" if ":" in host else host, port)
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the SIGINT it stopped on
            server.run(sockets=[sock])


def serve(args: argparse.Namespace) -> None:
    from bridge.server.app import create_app

    settings = _settings(args)
    if args.workers > 1 and not settings.redis_url:
        raise CliError(
            f"--workers {args.workers} needs --redis-url: on the in-memory backend each process would have runs "
            "and subscribers of its own, so give --workers 1 (the default)"
        )
    _load(args.tasks)
    registry = default_registry if args.tasks else None
    if args.workers > 1:
        serve_workers(args, settings, lambda public: create_app(public, registry=registry))
        return
    run_server(
        lambda port: create_app(with_public_url(settings, args.host, port), registry=registry),
        settings,
        args.host,
        args.port,
    )


def serve_workers(args: argparse.Namespace, settings: Settings, make_app: Callable[[Settings], Starlette]) -> None:
    """`serve --workers N`, N > 1: N processes serving one port (bridge/supervisor.py); the parent holds the
    port (bound, never listening: the kernel gives it no connection) so that no other program takes it
    between two workers, and so that --port 0 picks one port for all."""
    if not sys.platform.startswith("linux"):  # elsewhere SO_REUSEPORT does not spread connections
        raise CliError("--workers above 1 needs Linux; elsewhere run one process per port behind a load balancer")
    with listen(args.host, args.port, reuse_port=True) as held:
        port = held.getsockname()[1]
        public = with_public_url(settings, args.host, port)

        def serve_one(serving: Callable[[], None]) -> None:
            held.close()  # the parent's, not this child's
            try:
                run_server(lambda _: make_app(public), settings, args.host, port, lambda _: serving(), True)
            except (CliError, ConfigError) as exc:
                fail(args, exc)

        stop_seconds = SHUTDOWN_GRACE_SECONDS + settings.shutdown_grace_seconds + STOP_MARGIN_SECONDS
        code = Supervisor(args.workers, serve_one, stop_seconds).run()
    if code:
        sys.exit(code)


def testserver(args: argparse.Namespace) -> None:
    """`serve` for a test in another language: a ManualClock, a random test key and the `/_test/` API; one
    JSON line on stdout (url, secretKey, pid) once it accepts connections."""
    from bridge.testing.app import test_app
    from bridge.testing.redis_server import start_redis_server
    from bridge.testing.server import test_settings

    if not args.tasks:
        raise CliError("give --tasks MODULE_OR_FILE: the tasks the test drives")
    _load(args.tasks)
    # uvicorn stops gracefully on SIGTERM, then raises it again: exiting (0) here, the redis-server stops too
    signal.signal(signal.SIGTERM, exit_quietly)
    redis = start_redis_server() if args.redis else None
    try:
        settings = test_settings(redis.url if redis else None)

        def announce(port: int) -> None:
            url = f"http://{TEST_HOST}:{port}"
            print(json.dumps({"url": url, "secretKey": settings.secret_key, "pid": os.getpid()}), flush=True)

        run_server(
            lambda port: test_app(replace(settings, public_url=f"http://{TEST_HOST}:{port}"), default_registry),
            settings,
            TEST_HOST,
            args.port,
            announce,
        )
    finally:
        if redis:
            redis.stop()


def worker(args: argparse.Namespace) -> None:
    from bridge.runtime import state
    from bridge.runtime.core import Bridge
    from bridge.worker.executor import Worker

    if not args.tasks:
        raise CliError("give --tasks MODULE_OR_FILE: the tasks this worker runs")
    settings = _settings(args)
    if not settings.redis_url:
        raise CliError("needs --redis-url (with the in-memory backend, `serve --tasks` runs tasks)")
    _load(args.tasks)

    async def main() -> None:
        await wait_for_backend(settings)
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


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="realtime-bridge", description=__doc__.split("\n\n")[0])
    root.add_argument("--version", action="version", version=f"%(prog)s {version('realtime-bridge')}")
    commands = root.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser(
        "serve", help="run the bridge server (and, with --tasks, a worker)", description="Run the bridge server."
    )
    # argparse converts a string default with `type`, so a bad BRIDGE_PORT is the same one-line error as --port's
    serve_parser.add_argument(
        "--host",
        default=os.environ.get("BRIDGE_HOST", "127.0.0.1"),
        help="address to listen on, or BRIDGE_HOST; 0.0.0.0 for every interface (default: %(default)s)",
    )
    serve_parser.add_argument(
        "--port",
        type=int,
        default=os.environ.get("BRIDGE_PORT", "8787"),
        help="port to listen on, or BRIDGE_PORT (default: %(default)s)",
    )
    serve_parser.add_argument(
        "--workers",
        type=_workers,
        default=os.environ.get("BRIDGE_WORKERS", "1"),
        help="server processes on the port, 1 to 64, or auto (one per core), or BRIDGE_WORKERS; more than 1 "
        "needs --redis-url (default: %(default)s)",
    )
    _common(serve_parser)
    serve_parser.set_defaults(handler=serve)
    test_parser = commands.add_parser(
        "testserver",
        help="run a bridge for end-to-end tests, with a test-only HTTP API",
        description="Run a bridge for end-to-end tests: a test key, a clock the test advances, and the /_test/ "
        "API; prints one JSON line (url, secretKey, pid) once it accepts connections.",
    )
    _tasks(test_parser)
    test_parser.add_argument(
        "--port", type=int, default=0, help="port to listen on, 0 for a free one (default: %(default)s)"
    )
    test_parser.add_argument(
        "--redis",
        action="store_true",
        help="use a redis-server of its own on a free port, stopped with it (default: in-memory)",
    )
    _diagnostics(test_parser)
    test_parser.set_defaults(handler=testserver)
    worker_parser = commands.add_parser(
        "worker", help="run tasks from the Redis queue", description="Run tasks from the Redis queue."
    )
    _common(worker_parser)
    worker_parser.set_defaults(handler=worker)
    return root


def fail(args: argparse.Namespace, exc: CliError | ConfigError) -> NoReturn:
    """A start-up mistake: one line and exit code 2, or with --debug the traceback."""
    if args.debug:
        raise exc
    print(f"realtime-bridge {args.command}: error: {exc}", file=sys.stderr)
    sys.exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        configure_logging(*log_settings(args.log_level, args.log_format))
        args.handler(args)
    except (CliError, ConfigError) as exc:
        fail(args, exc)
    except KeyboardInterrupt:  # Ctrl-C while waiting for Redis: nothing to report
        sys.exit(130)


if __name__ == "__main__":
    main()
