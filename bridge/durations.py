"""Durations as the official SDK writes them: "30s", "15m", "2h", "3d", "4w", or seconds."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from bridge.errors import ValidationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration_seconds(value: str | int | float | timedelta) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ValidationError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if not match:
            raise ValidationError(f"invalid duration {value!r}: use a number and one of s, m, h, d, w (e.g. '15m')")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(f"invalid duration {value!r}: must be finite and not negative")
    return seconds


def deadline_from(value: str | int | float | timedelta | datetime, now: datetime | None = None) -> datetime:
    """An absolute UTC deadline from a duration or a datetime (naive datetimes are taken as UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    start = now or datetime.now(UTC)
    try:
        return start + timedelta(seconds=parse_duration_seconds(value))
    except OverflowError as exc:
        raise ValidationError(f"invalid duration {value!r}: too far in the future") from exc
