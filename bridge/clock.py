"""`Clock`: the time deadlines are measured on (wait tokens' timeouts, `wait.for_` / `wait.until`, a retry's
backoff, which is a wait token of the run's own, a trigger's `delay` and `ttl`).

Every deadline is read from the `Bridge`'s clock, so a test can skip time (`bridge.testing.ManualClock`) and
the timer fires what became due at once. Bounds that protect the process (leases, heartbeats, the wait hold,
retention) stay on the system's clocks: skipping time must not declare a worker dead.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from bridge.models import now_ms


class Clock:
    """The system's wall clock, which only moves forward at its own pace."""

    def now_ms(self) -> int:
        return now_ms()

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_ms() / 1000, UTC)

    def on_jump(self, callback: Callable[[], None]) -> None:
        """`callback` runs whenever the time jumps ahead (a timer then fires what became due): never here."""
