"""Durations as the official SDK writes them ("30s", "15m", "2h", "1h30m", "3d", "4w", or seconds), and moments:
a duration from now, a datetime or an ISO date."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from bridge.errors import ValidationError

_UNITS = {"s": 1, "m": 60, "h": 3600, "hr": 3600, "d": 86400, "w": 604800}
_PART = r"(\d+(?:\.\d+)?)\s*(hr|[smhdw])\s*"
_DURATION = re.compile(rf"^\s*(?:{_PART})+$")
_PARTS = re.compile(_PART)
MAX_DURATION_LENGTH = 100  # as the official parser: longer text is refused before any regex runs
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")  # how the official clients send a Date
Moment = str | int | float | timedelta | datetime


def parse_duration_seconds(value: str | int | float | timedelta) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bool):
        raise ValidationError(f"invalid duration {value!r}")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        if len(value) > MAX_DURATION_LENGTH or not _DURATION.match(value):
            raise ValidationError(
                f"invalid duration {value[:40]!r}: use numbers with one of s, m, h, d, w (e.g. '15m', '1h30m')"
            )
        seconds = sum(float(number) * _UNITS[unit] for number, unit in _PARTS.findall(value))
    if not math.isfinite(seconds) or seconds < 0:
        raise ValidationError(f"invalid duration {value!r}: must be finite and not negative")
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as the official API shows one: "1h30m"; a fraction of a second as "1.5s"."""
    if seconds != int(seconds):
        return f"{seconds:g}s"
    rest, parts = int(seconds), []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def deadline_from(value: Moment, now: datetime | None = None) -> datetime:
    """An absolute UTC deadline from a duration, a datetime or an ISO date (naive ones are taken as UTC)."""
    if isinstance(value, str) and _ISO_DATE.match(value):
        try:
            value = datetime.fromisoformat(value)
        except ValueError as exc:
            raise ValidationError(f'invalid date {str(value)[:40]!r}: a duration like "10m" or an ISO date') from exc
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    start = now or datetime.now(UTC)
    try:
        return start + timedelta(seconds=parse_duration_seconds(value))
    except OverflowError as exc:
        raise ValidationError(f"invalid duration {value!r}: too far in the future") from exc


def moment_ms(value: object, now_ms: int, what: str) -> int:
    """`value` (a duration from `now_ms`, a datetime or an ISO date) in ms since the epoch; anything else,
    or a date out of range, is a ValidationError naming `what`."""
    if not isinstance(value, (str, int, float, timedelta, datetime)) or isinstance(value, bool):
        raise ValidationError(f'{what} is a duration like "10m", seconds, or a date')
    try:
        return int(deadline_from(value, datetime.fromtimestamp(now_ms / 1000, tz=UTC)).timestamp() * 1000)
    except (OverflowError, ValueError) as exc:  # a datetime out of range
        raise ValidationError(f"invalid {what} {str(value)[:40]!r}") from exc
