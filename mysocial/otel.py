"""Optional OpenTelemetry spans, exported over OTLP/HTTP (MYSOCIAL_OTLP_ENDPOINT).

Off by default: then nothing here runs per call. When on, each process exports:
- command services: one SERVER span per RPC, the child of the caller's traceparent;
  the event then carries this span's traceparent, so what follows joins its trace;
- processor: one span per transaction of the counts projection, linked to the
  traceparents of the events it carried (a commit serves many traces: links, the
  OpenTelemetry way for batches);
- query service: one span per stream message that shows traced commands, linked the
  same way.
The ids travel whether or not spans are exported (mysocial/trace.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mysocial.log import get_logger
from mysocial.trace import clean_traceparent

log = get_logger("otel")

_provider: Any = None
_tracer: Any = None
MAX_LINKS = 128
EXPORT_DELAY_MS = 1000  # spans reach the collector within about a second


def configure(endpoint: str, service: str) -> None:
    """Export this process's spans to endpoint (nothing when it is empty)."""
    global _provider, _tracer
    if not endpoint or _provider is not None:
        return
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(
        BatchSpanProcessor(
            OTLPSpanExporter(endpoint=endpoint), schedule_delay_millis=EXPORT_DELAY_MS
        )
    )
    _provider, _tracer = provider, provider.get_tracer("mysocial")
    log.info("otel_export_on", endpoint=endpoint, service=service)


def enabled() -> bool:
    return _tracer is not None


def shutdown() -> None:
    """Export what is still buffered (at a clean stop)."""
    global _provider, _tracer
    if _provider is not None:
        _provider.shutdown()
    _provider = _tracer = None


def traceparent_of(span: Any) -> str:
    """A span's own W3C traceparent (version 00)."""
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def _span_context(traceparent: str) -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags

    _, trace_id, span_id, flags = traceparent.split("-")
    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16))
    )


def start_server(name: str, traceparent: str, **attributes: str) -> Any:
    """A SERVER span (end() it), child of the caller's clean traceparent if any; None
    when spans are off."""
    if _tracer is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanKind

    parent = None
    if traceparent:
        parent = trace.set_span_in_context(NonRecordingSpan(_span_context(traceparent)))
    return _tracer.start_span(name, context=parent, kind=SpanKind.SERVER, attributes=attributes)


def start_linked(name: str, traceparents: Iterable[str], **attributes: Any) -> Any:
    """A span linked to the traces of what it handles (end() it); None when off."""
    if _tracer is None:
        return None
    from opentelemetry.trace import Link

    # Events may come from any producer: a traceparent that is not a valid one is
    # skipped, never an error in the processor's commit or a stream.
    clean = [c for c in dict.fromkeys(clean_traceparent(tp) for tp in traceparents) if c]
    links = [Link(_span_context(tp)) for tp in clean[:MAX_LINKS]]
    return _tracer.start_span(name, links=links, attributes=attributes)
