"""Which official trigger options the bridge implements, accepts with no effect, or refuses.

An option the bridge does not implement is refused with `UnsupportedOptionError` (422
`unsupported_option`, naming the field), never ignored: a Node backend's `queue` or `priority` must not
quietly run differently than it asked. `docs/official-protocol.md` lists them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bridge.errors import UnsupportedOptionError

# Official names (`options.<name>` of a trigger or a batch item) that the trigger routes read.
IMPLEMENTED = frozenset(
    {
        "payloadType",
        "metadataType",
        "tags",
        "idempotencyKey",
        "idempotencyKeyTTL",
        "metadata",
        "test",
        "maxAttempts",
        "delay",
        "ttl",
        "debounce",
        "queue",
        "concurrencyKey",
        "priority",
        "maxDuration",
    }
)
# Accepted and without effect: hints about where a run executes, and facts the bridge gets otherwise.
NO_EFFECT = frozenset({"machine", "region", "payloadSize", "idempotencyKeyOptions"})

_CHILD_RUNS = "child runs (triggerAndWait, a trigger from inside a task) are not implemented yet"
_VERSIONS = "the bridge has no deployments or task versions: a run executes the code of the worker that claims it"
_NAMED_LIMITS = "named concurrency limits are not implemented: use a queue's concurrencyLimit (docs/queues.md)"
# Official name -> (the Python SDK's name or None, why it is refused).
REFUSED: dict[str, tuple[str | None, str]] = {
    "concurrency": ("concurrency", _NAMED_LIMITS),
    "gates": (None, _NAMED_LIMITS),
    "parentRunId": (None, _CHILD_RUNS),
    "resumeParentOnCompletion": (None, _CHILD_RUNS),
    "parentBatch": (None, _CHILD_RUNS),
    "parentAttempt": (None, _CHILD_RUNS),
    "dependentAttempt": (None, _CHILD_RUNS),
    "dependentBatch": (None, _CHILD_RUNS),
    "lockToVersion": ("version", _VERSIONS),
    "externalDeploymentId": (None, _VERSIONS),
    "bulkActionId": (None, "bulk actions are not implemented"),
}
_BY_PYTHON_NAME = {python: official for official, (python, _) in REFUSED.items() if python}
# Fields of a batch's phase one (`POST /api/v3/batches`) that it does not implement.
BATCH_REFUSED = {
    "parentRunId": _CHILD_RUNS,
    "resumeParentOnCompletion": _CHILD_RUNS,
    "idempotencyKey": "a batch's own idempotency key is not implemented yet (each item's is)",
}


def refuse_unsupported(options: Mapping[str, Any], prefix: str = "options.") -> None:
    """Refuses the first option set (not null, not false) that `IMPLEMENTED` and `NO_EFFECT` do not hold; an
    unknown name too, so an option of a newer official client is not dropped unseen."""
    for name, value in options.items():
        if value is None or value is False or name in IMPLEMENTED or name in NO_EFFECT:
            continue
        _refuse(f"{prefix}{name}", REFUSED[name][1] if name in REFUSED else "the bridge does not know this option")


def refuse_unsupported_batch(body: Mapping[str, Any]) -> None:
    for name, why in BATCH_REFUSED.items():
        if body.get(name) not in (None, False):
            _refuse(name, why)


def _refuse(field: str, why: str) -> None:
    raise UnsupportedOptionError(f"{field} is not supported by the bridge: {why}", field)


def refuse_python_options(function: str, options: Mapping[str, Any]) -> None:
    """The SDK's refusal of keyword options it does not implement, unless None (TypeError for a name the
    official SDK lacks)."""
    for name, value in options.items():
        official = _BY_PYTHON_NAME.get(name)
        if official is None:
            raise TypeError(f"{function}() got an unexpected keyword argument {name!r}")
        if value is not None:
            _refuse(name, REFUSED[official][1])
