"""The `debounce` trigger option: a burst of triggers of one task with the same key becomes one run.

A debounced run is a DELAYED run (bridge/runtime/engine.py) whose start moves to `delay` after each new
trigger of its key while it is still DELAYED, but never past `max_delay` after its first trigger: a trigger
that would push it further (or that comes once it left DELAYED) starts the key's next run, as the official
engine does. `leading` keeps the first trigger's payload, metadata, tags and maxAttempts; `trailing` takes
each new trigger's.

Concurrency, with no lock: the key's current run id is a hint in the broker (`put_value`, for the
retention); the run itself is created by an insert-if-absent on an idempotency scope named after the run it
follows (`debounce:<task>:<key>:after:<previous run id>`), so of the triggers that found the same run
unusable exactly one creates the next run and the others get it back and push it; pushing is a
compare-and-set on the run's version (`RunEngine.update`). A stale hint only costs a step along that chain.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from bridge.durations import format_duration, parse_duration_seconds
from bridge.errors import ValidationError

MAX_DEBOUNCE_KEY_LENGTH = 512  # the official schema's bound
_MODES = ("leading", "trailing")
_NAMES = frozenset({"key", "delay", "mode", "max_delay"})
_OFFICIAL_NAMES = {"key": "key", "delay": "delay", "mode": "mode", "maxDelay": "max_delay"}


@dataclass(frozen=True)
class Debounce:
    key: str
    delay_ms: int
    mode: Literal["leading", "trailing"]
    max_delay_ms: int | None  # from the first trigger; None: the longest delay (the retention)

    def to_official(self) -> dict[str, str]:
        """As the official trigger route takes it (durations as text)."""
        official = {"key": self.key, "delay": format_duration(self.delay_ms / 1000), "mode": self.mode}
        if self.max_delay_ms is not None:
            official["maxDelay"] = format_duration(self.max_delay_ms / 1000)
        return official


def parse_debounce(value: Mapping[str, Any] | None, limit_seconds: float) -> Debounce | None:
    """`{"key", "delay", "mode"?, "max_delay"?}` (the Python SDK's names; the official route renames
    `maxDelay`); ValidationError naming what is wrong."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValidationError('debounce is an object: {"key", "delay", "mode", "max_delay"}')
    unknown = set(value) - _NAMES
    if unknown:
        raise ValidationError(f"debounce has no field {sorted(unknown)[0]!r}: it takes key, delay, mode, max_delay")
    key, mode = value.get("key"), value.get("mode") or "leading"
    if not isinstance(key, str) or not key or len(key) > MAX_DEBOUNCE_KEY_LENGTH:
        raise ValidationError(f"debounce.key is a string of 1 to {MAX_DEBOUNCE_KEY_LENGTH} characters")
    if mode not in _MODES:
        raise ValidationError('debounce.mode is "leading" or "trailing"')
    delay = _duration("delay", value.get("delay"), limit_seconds)
    max_delay = value.get("max_delay")
    max_delay_ms = None if max_delay is None else int(_duration("max_delay", max_delay, limit_seconds))
    if delay < 1:
        raise ValidationError("debounce.delay must be at least 1 ms")
    return Debounce(key, int(delay), "trailing" if mode == "trailing" else "leading", max_delay_ms)


def from_official(value: object) -> dict[str, Any] | None:
    """The official route's `options.debounce` (`maxDelay`) with the Python SDK's names, for `parse_debounce`."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValidationError('options.debounce is an object: {"key", "delay", "mode", "maxDelay"}')
    unknown = set(value) - _OFFICIAL_NAMES.keys()
    if unknown:
        raise ValidationError(
            f"options.debounce has no field {sorted(unknown)[0]!r}: it takes {', '.join(_OFFICIAL_NAMES)}"
        )
    return {_OFFICIAL_NAMES[name]: given for name, given in value.items()}


def _duration(name: str, value: object, limit_seconds: float) -> float:
    """A duration field in ms, at most `limit_seconds` (the retention: a longer wait would outlive the run)."""
    if value is None:
        raise ValidationError(f'debounce.{name} is required: a duration like "5s", or seconds')
    if isinstance(value, bool) or not isinstance(value, (str, int, float, timedelta)):
        raise ValidationError(f'debounce.{name} is a duration like "5s", seconds or a timedelta')
    seconds = parse_duration_seconds(value)
    if seconds > limit_seconds:
        raise ValidationError(
            f"debounce.{name} is at most {format_duration(limit_seconds)} (BRIDGE_RETENTION, at most 365 days)"
        )
    return seconds * 1000
