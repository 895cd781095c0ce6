"""realtime-bridge: live run feeds, streams and inputs between Python tasks and React pages.

from bridge import task, tasks, runs, metadata, streams, wait, auth, configure
"""

from bridge.sdk import auth, metadata, runs, streams, tasks, wait
from bridge.sdk.state import configure
from bridge.worker.registry import RunContext, task

__all__ = ["RunContext", "auth", "configure", "metadata", "runs", "streams", "task", "tasks", "wait"]
