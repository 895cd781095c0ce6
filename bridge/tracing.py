"""Optional OpenTelemetry spans (the `[otel]` extra; docs/observability.md): a run's trigger, each of its
executions, its output stream appends and the input values sent to it, in one trace.

The trigger's span context travels in the run record (`Run.trace_context`, a W3C `traceparent`), so the
worker executing the run, in any process, starts its span as a child of the trigger's. Only the API is
used: spans go where the process's tracer provider sends them, if it set one before a bridge started
(`notice_provider`); otherwise, and without the extra installed, `span` and `current_traceparent` do nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
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


_provider_set = False  # once true, stays: a process sets its tracer provider once
_NO_SPAN = contextlib.nullcontext()


def notice_provider() -> None:
    """Called as a bridge starts: from then on spans are made if the process has set a tracer provider by now.
    Checked here, not per span: asking the API costs about as much as the rest of a stream batch's
    bookkeeping, and its no-op span several times more."""
    global _provider_set
    if not _provider_set and _tracer is not None:
        _provider_set = not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def span(
    name: str, attributes: Attributes, parent: str | None = None, start_time: int | None = None
) -> AbstractContextManager[object]:
    """A span around a `with` block: a child of `parent` (a `traceparent`) when given, else of the current span;
    started at `start_time` (`time.time_ns()`) when what it covers began before its parent was known; a
    shared empty context when not tracing."""
    if not _provider_set:
        return _NO_SPAN
    assert _tracer is not None
    context = _propagator.extract({"traceparent": parent}) if parent else None
    return _tracer.start_as_current_span(name, context=context, attributes=attributes, start_time=start_time)


def current_traceparent() -> str | None:
    """The current span's context as a `traceparent`, to store with what continues the trace elsewhere."""
    if not _provider_set:
        return None
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier.get("traceparent")
