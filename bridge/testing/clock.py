"""`ManualClock`: the wall clock plus the time a test skipped, for a test bridge's deadlines.

`clock.advance("24h")` moves every deadline measured on it 24 hours closer: the wait token timer wakes
and fires the tokens that became due (their runs resume) at once, instead of a day later. Time keeps
flowing as usual between jumps; it never goes back.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from bridge.clock import Clock
from bridge.durations import parse_duration_seconds


class ManualClock(Clock):
    def __init__(self) -> None:
        self._skipped_ms = 0
        self._on_jump: list[Callable[[], None]] = []

    def now_ms(self) -> int:
        return super().now_ms() + self._skipped_ms

    def on_jump(self, callback: Callable[[], None]) -> None:
        self._on_jump.append(callback)

    def advance(self, duration: str | int | float | timedelta) -> None:
        """Skips `duration` ("30s", "24h", "7d", seconds or a timedelta) ahead."""
        self._skipped_ms += int(parse_duration_seconds(duration) * 1000)
        for callback in self._on_jump:
            callback()
