"""realtime-bridge: live run feeds, streams and inputs between Python tasks and React pages.

from bridge import task, tasks, batch, runs, metadata, streams, steps, wait, auth, configure

The SDK's modules keep the official names (`bridge.auth`, `bridge.streams`, ...); they reach a bridge
through `bridge.client` (in this process, or a running one over HTTP: `configure(url=...)`), and the
machinery they drive lives in `bridge.runtime`, `bridge.backends`, `bridge.worker` and `bridge.server`.
"""

from importlib.metadata import version

from bridge import auth, batch, metadata, runs, steps, streams, tasks, wait
from bridge.client.state import configure
from bridge.errors import AbortTaskRunError, SubtaskUnwrapError
from bridge.tasks import BatchResult, TaskRunResult, task
from bridge.worker.registry import RunContext

__version__ = version("realtime-bridge")  # pyproject.toml holds it
__all__ = [
    "AbortTaskRunError",
    "BatchResult",
    "RunContext",
    "SubtaskUnwrapError",
    "TaskRunResult",
    "auth",
    "batch",
    "configure",
    "metadata",
    "runs",
    "steps",
    "streams",
    "task",
    "tasks",
    "wait",
]
