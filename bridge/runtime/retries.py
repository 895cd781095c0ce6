"""Retry policies, as the official `retry` task option: how many attempts, and the backoff between them."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from bridge.durations import parse_duration_seconds
from bridge.errors import ValidationError

_KNOWN = {"max_attempts", "factor", "min_timeout", "max_timeout", "randomize"}


@dataclass(frozen=True)
class RetryPolicy:
    """The official defaults: 1 s, then doubling up to 10 s, randomised (x 1 to 2)."""

    max_attempts: int = 3
    factor: float = 2.0
    min_timeout: float = 1.0  # seconds before the second attempt
    max_timeout: float = 10.0
    randomize: bool = True

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None, default_max_attempts: int, limit: int) -> RetryPolicy:
        """`{"max_attempts": 3, "factor": 2, "min_timeout": "1s", "max_timeout": "30s", "randomize": True}`;
        what is missing keeps its default (max_attempts: the worker's `default_max_attempts`)."""
        spec = dict(spec or {})
        unknown = set(spec) - _KNOWN
        if unknown:
            raise ValidationError(f"unknown retry option(s): {', '.join(sorted(unknown))}")
        policy = cls(
            max_attempts=check_max_attempts(spec.get("max_attempts", default_max_attempts), limit),
            factor=_positive_number(spec.get("factor", cls.factor), "factor"),
            min_timeout=parse_duration_seconds(spec.get("min_timeout", cls.min_timeout)),
            max_timeout=parse_duration_seconds(spec.get("max_timeout", cls.max_timeout)),
            randomize=bool(spec.get("randomize", cls.randomize)),
        )
        if policy.max_timeout < policy.min_timeout:
            raise ValidationError("retry max_timeout is below min_timeout")
        return policy

    def delay_before(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number `attempt` (2 for the first retry)."""
        delay = self.min_timeout * self.factor ** max(0, attempt - 2)
        if self.randomize:
            delay *= 1 + (rng or random).random()
        return min(delay, self.max_timeout)


def check_max_attempts(value: Any, limit: int, name: str = "max_attempts") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise ValidationError(f"{name} is a whole number from 1 to {limit}")
    return value


def _positive_number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
        raise ValidationError(f"retry {name} is a finite number of at least 1")
    return float(value)
