"""`OutageLog`: a loop retrying a backend that is down logs when the outage starts and when it ends,
one line per change of state, not one per retry (a Redis down for an hour is two lines, not 3,600)."""

from __future__ import annotations

import logging


class OutageLog:
    def __init__(self, log: logging.Logger, what: str) -> None:
        self._log = log
        self._what = what
        self.down = False

    def failed(self, reason: str) -> None:
        if not self.down:
            self.down = True
            self._log.warning("%s: backend unavailable (%s); retrying until it is back", self._what, reason)

    def recovered(self) -> None:
        if self.down:
            self.down = False
            self._log.info("%s: backend available again", self._what)
