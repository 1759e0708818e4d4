"""Traces and structured logs for every process (API, scheduler, worker agent, executor).

Both are off or plain by default: traces are exported only when an OTLP endpoint is
configured, and a process that has none never creates a span (callers check
:attr:`Tracing.enabled`, or are not wrapped at all). Logs are text unless
``log_format`` is ``json``.
"""

from services.observability.logs import configure_logging, log_context
from services.observability.tracing import (
    TRACEPARENT,
    TRACEPARENT_ENV,
    Tracing,
    ending,
    parent_context,
    setup_tracing,
    traceparent_of,
    valid_traceparent,
)

__all__ = [
    "TRACEPARENT",
    "TRACEPARENT_ENV",
    "Tracing",
    "configure_logging",
    "ending",
    "log_context",
    "parent_context",
    "setup_tracing",
    "traceparent_of",
    "valid_traceparent",
]
