"""`python -m tests.support.serve PORT`: a bridge with the test tasks, for test suites in other languages
(js-hooks' end-to-end tests). In-memory backend; BRIDGE_SECRET_KEY as usual.

`python -m tests.support.serve --wait PORT` returns once that bridge answers (at most 15 s).
"""

from __future__ import annotations

import sys
import time
import urllib.request

from bridge.cli import run_server
from bridge.config import Settings
from bridge.logs import configure_logging, log_settings
from bridge.server.app import create_app
from tests.support.tasks import registry


def wait_until_up(port: int, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"no bridge answered on port {port}")
            time.sleep(0.1)  # another process is starting: nothing to await but its port


def main() -> None:
    if sys.argv[1] == "--wait":
        wait_until_up(int(sys.argv[2]))
        return
    configure_logging(*log_settings())
    settings = Settings.from_env()
    run_server(lambda _port: create_app(settings, registry=registry), settings, "127.0.0.1", int(sys.argv[1]))


if __name__ == "__main__":
    main()
