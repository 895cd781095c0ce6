"""Optional OpenTelemetry spans (the `[otel]` extra; docs/observability.md): a run's trigger, each of its
executions, its output stream appends and the input values sent to it, in one trace.

The trigger's span context travels in the run record (`Run.trace_context`, a W3C `traceparent`), so the
worker executing the run, in any process, starts its span as a child of the trigger's. Only the API is
used: spans go where the process's tracer provider sends them. Without the extra installed, or before the
process sets a tracer provider, `span` and `current_traceparent` do nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

Attributes = Mapping[str, str | int]

_tracer: Tracer | None
try:
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the extra is not installed
    _tracer = None
else:
    _tracer = trace.get_tracer("bridge")  # a proxy until the process sets its provider, then that one's
    _propagator = TraceContextTextMapPropagator()


_provider_set = False  # latched: a process sets its tracer provider once


def _tracing() -> bool:
    """Whether spans go anywhere: the extra is installed and the process set a tracer provider. Checked first:
    the API's no-op span costs several times the `with` around it, and there is one per stream batch."""
    global _provider_set
    if not _provider_set and _tracer is not None:
        _provider_set = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)
    return _provider_set


@contextlib.contextmanager
def span(name: str, attributes: Attributes, parent: str | None = None, start_time: int | None = None) -> Iterator[None]:
    """A span around the block: a child of `parent` (a `traceparent`) when given, else of the current span;
    started at `start_time` (`time.time_ns()`) when what it covers began before its parent was known."""
    if not _tracing():
        yield
        return
    assert _tracer is not None
    context = _propagator.extract({"traceparent": parent}) if parent else None
    with _tracer.start_as_current_span(name, context=context, attributes=attributes, start_time=start_time):
        yield


def current_traceparent() -> str | None:
    """The current span's context as a `traceparent`, to store with what continues the trace elsewhere."""
    if not _tracing():
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")
