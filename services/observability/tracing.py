"""One :class:`Tracing` per process: an OpenTelemetry tracer when an OTLP endpoint is
configured, nothing at all otherwise.

A task's trace crosses four processes and a database row, so its context travels as a
W3C ``traceparent`` string: in a Kafka record header and the submit event (API to
scheduler), in the task's row (records paged back from TiDB carry no headers), and in
the leased task (scheduler to worker). The tracer provider is the process's own, not the
global one, so that tests can hold several and a library we import cannot turn it on.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

#: The W3C header (and Kafka record header) name of a span context.
TRACEPARENT = "traceparent"
#: The environment variable that carries a ``traceparent`` to a child process (the
#: name OpenTelemetry's environment-variable carrier uses).
TRACEPARENT_ENV = "TRACEPARENT"
#: Instrumentation scope of our spans.
SCOPE = "wsched"

_PROPAGATOR = TraceContextTextMapPropagator()
#: Version 00 of the W3C format, the only one we write.
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")


@dataclass(frozen=True, kw_only=True)
class Tracing:
    """A process's tracer, or none: ``enabled`` is the one check hot paths make."""

    tracer: trace.Tracer | None = None
    provider: TracerProvider | None = None

    @property
    def enabled(self) -> bool:
        return self.tracer is not None

    def require(self) -> trace.Tracer:
        """The tracer; only called behind an ``enabled`` check."""
        if self.tracer is None:
            raise RuntimeError("tracing is off: check Tracing.enabled first")
        return self.tracer

    def shutdown(self) -> None:
        """Export the spans still buffered (at process exit)."""
        if self.provider is not None:
            self.provider.shutdown()


#: Tracing off: no tracer, no provider, no exporter thread.
OFF = Tracing()


def setup_tracing(
    *,
    service: str,
    endpoint: str | None,
    sample_ratio: float = 1.0,
    processors: Sequence[SpanProcessor] = (),
) -> Tracing:
    """Tracing for a process named ``service``: off unless ``endpoint`` (OTLP/gRPC,
    e.g. ``http://collector:4317``) or ``processors`` (tests) are given."""
    if endpoint is None and not processors:
        return OFF
    provider = TracerProvider(
        resource=Resource.create({SERVICE_NAME: service}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    if endpoint is not None:
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(endpoint)))
    for processor in processors:
        provider.add_span_processor(processor)
    return Tracing(tracer=provider.get_tracer(SCOPE), provider=provider)


def _otlp_exporter(endpoint: str) -> SpanExporter:
    # Imported here: the exporter pulls in its gRPC stubs, which a process that does not
    # export never needs to load.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter(endpoint=endpoint, insecure=endpoint.startswith("http://"))


@contextlib.contextmanager
def ending(spans: Sequence[trace.Span]) -> Iterator[None]:
    """End ``spans`` after the block; an exception leaving it marks each of them ERROR."""
    try:
        yield
    except Exception as err:
        for span in spans:
            span.record_exception(err)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(err).__name__))
        raise
    finally:
        for span in spans:
            span.end()


def traceparent_of(span: trace.Span) -> str | None:
    """The span's context as a ``traceparent`` value (None for an invalid span)."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(span))
    return carrier.get(TRACEPARENT)


def valid_traceparent(text: str | bytes | None) -> str | None:
    """``text`` if it is a ``traceparent`` as we write them, else None.

    What a record carries is checked before it is stored: a malformed or oversized value
    must not fail the admission of the batch it came in.
    """
    if isinstance(text, bytes):
        text = text.decode("ascii", errors="replace")
    return text if text and _TRACEPARENT.fullmatch(text) else None


def parent_context(traceparent: str | None) -> Context | None:
    """The context a ``traceparent`` names, to start a child span in; None when absent.

    A malformed value gives an empty context (the span then starts a trace of its own)
    rather than an error: it came from a record or a row we do not control entirely.
    """
    if not traceparent:
        return None
    return _PROPAGATOR.extract({TRACEPARENT: traceparent})
