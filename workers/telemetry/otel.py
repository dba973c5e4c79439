"""OpenTelemetry spans of a request's path, exported when ``INFERQ_OTEL_ENABLED`` (extra ``inferq[otel]``).

The trace context itself (:mod:`schemas.tracing`) rides every request whether or not spans are
exported; this module only turns the pipeline's observer events into spans, after the fact, with
the ids the pipeline already chose, so the spans and the ECS records (``trace.id``, ``span.id``)
name the same things:

- ``inferq publish`` (client, producer): the record sent until the broker had it; its span id is
  the ``traceparent`` parent the intake reads.
- ``inferq intake`` (consumer) / ``inferq api`` (server): received until handed on; the span the
  work item carries (``span.id`` of the request's records).
- ``inferq queue``: handed to Celery until its batch started (a child of the intake's span).
- ``inferq batch``: one per forward pass, the root of its own trace, with a Link to the span of
  each request it served (a batch serves many traces; OpenTelemetry's messaging conventions).
- ``inferq result``: the terminal result written (a child of the intake's span).

It hangs on :class:`~schemas.observer.Observer` (wired by :class:`~workers.telemetry.observe.Telemetry`
at process start), never inline in a core loop; when off nothing is imported and the pipeline
builds no span objects (callers check :attr:`Observer.tracing`).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from schemas.messages import InferenceResult, now_ms
from schemas.observer import API_SPAN, INTAKE_SPAN, PUBLISH_SPAN, BatchStats, Observer, RequestSpan
from schemas.settings import Settings

log = logging.getLogger(__name__)

QUEUE_SPAN = "inferq queue"
BATCH_SPAN = "inferq batch"
RESULT_SPAN = "inferq result"
LINKS_MAX = 128  # OpenTelemetry's default span limit: links past it would be dropped anyway
KINDS = {PUBLISH_SPAN: SpanKind.PRODUCER, INTAKE_SPAN: SpanKind.CONSUMER, API_SPAN: SpanKind.SERVER}


class _ChosenIds(RandomIdGenerator):
    """Ids the caller chose for the next span started on this thread (the pipeline picked them
    before any span existed), else random ones."""

    def __init__(self) -> None:
        self._next = threading.local()

    def choose(self, trace_id: str | None, span_id: str) -> None:
        self._next.trace_id, self._next.span_id = trace_id, span_id

    def generate_trace_id(self) -> int:
        chosen = getattr(self._next, "trace_id", None)
        self._next.trace_id = None
        return int(chosen, 16) if chosen else super().generate_trace_id()

    def generate_span_id(self) -> int:
        chosen = getattr(self._next, "span_id", None)
        self._next.span_id = None
        return int(chosen, 16) if chosen else super().generate_span_id()


def _ns(ms: float) -> int:
    return int(ms * 1_000_000)


def _context(trace_id: str, span_id: str, flags: int) -> SpanContext:
    return SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(flags))


def _parent(trace_id: str, span_id: str | None, flags: int) -> Context:
    """The context a span is started in: under the given span, or none (a root)."""
    if span_id is None:
        return Context()
    return trace.set_span_in_context(NonRecordingSpan(_context(trace_id, span_id, flags)), Context())


class SpanExport(Observer):
    """An observer that exports the request path's spans (see the module docstring)."""

    def __init__(self, processor: SpanProcessor, service: str = "inferq") -> None:
        self._ids = _ChosenIds()
        self.provider = TracerProvider(
            resource=Resource.create({"service.name": service}), id_generator=self._ids
        )
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("inferq")

    @classmethod
    def exporting_to(cls, exporter: SpanExporter, service: str = "inferq") -> SpanExport:
        return cls(BatchSpanProcessor(exporter), service)

    @property
    def tracing(self) -> bool:
        return True

    def _emit(
        self,
        name: str,
        parent: Context,
        start_ms: float,
        end_ms: float,
        attributes: dict[str, Any],
        *,
        chosen: tuple[str | None, str] | None = None,
        links: Sequence[Link] = (),
    ) -> None:
        if chosen is not None:
            self._ids.choose(*chosen)
        try:
            span = self.tracer.start_span(
                name,
                context=parent,
                kind=KINDS.get(name, SpanKind.INTERNAL),
                attributes={k: v for k, v in attributes.items() if v is not None},
                links=links,
                start_time=_ns(start_ms),
            )
        finally:
            self._ids.choose(None, "")  # never left for another span (a disabled tracer takes none)
        span.end(end_time=_ns(max(start_ms, end_ms)))

    def request_spans(self, spans: Sequence[RequestSpan]) -> None:
        """The spans a service opened for requests it passed on, with the ids the request carries."""
        for s in spans:
            t = s.trace
            self._emit(
                s.name,
                _parent(t.trace_id, t.parent_id, t.flags),
                s.start_ms,
                s.end_ms,
                {"inferq.request_id": s.request_id, "inferq.model": s.model},
                chosen=(t.trace_id if t.parent_id is None else None, t.span_id),
            )

    def results_written(self, results: Sequence[InferenceResult]) -> None:
        """Each traced terminal result: its queue wait and its write, under its request's span."""
        written = now_ms()
        for r in results:
            if r.trace_id is None or r.span_id is None:
                continue
            parent = _parent(r.trace_id, r.span_id, 1)
            t = r.timings
            attrs = {
                "inferq.request_id": r.request_id,
                "inferq.model": r.model,
                "inferq.batch_id": t.batch_id,
            }
            if t.queued_ms is not None and t.batch_start_ms is not None:
                self._emit(QUEUE_SPAN, parent, t.queued_ms, t.batch_start_ms, attrs)
            self._emit(
                RESULT_SPAN, parent, t.done_ms or written, written, {**attrs, "inferq.status": r.status.value}
            )

    def result_written(self, result: InferenceResult) -> None:
        self.results_written([result])

    def batch_done(self, stats: BatchStats) -> None:
        """One span per forward pass, a root of its own, linked to every request span it served."""
        if not stats.span_id:
            return
        links = [Link(_context(t.trace_id, t.span_id, t.flags)) for t in stats.traces[:LINKS_MAX]]
        end = now_ms()
        start = stats.started_ms if stats.started_ms is not None else end - stats.compute_ms
        attrs = {
            "inferq.model": stats.model,
            "inferq.model_version": stats.model_version,
            "inferq.batch_id": stats.batch_id,
            "inferq.batch.size": stats.size,
            "inferq.batch.tokens": stats.tokens,
            "inferq.batch.padded_tokens": stats.padded_tokens,
            "inferq.batch.failed": stats.failed,
            "inferq.batch.device": stats.device,
            "inferq.batch.requests": len(stats.traces),
        }
        self._emit(
            BATCH_SPAN,
            Context(),
            start,
            start + stats.compute_ms,
            attrs,
            chosen=(None, stats.span_id),
            links=links,
        )

    def shutdown(self) -> None:
        """Export what is buffered and stop (at process exit the provider does it on its own)."""
        self.provider.shutdown()


def from_settings(settings: Settings, service: str = "inferq") -> SpanExport | None:
    """The span export ``INFERQ_OTEL_ENABLED`` asks for, or None (off, or the extra not installed:
    one warning, and the pipeline runs on without spans)."""
    if not settings.otel_enabled:
        return None
    try:
        exporter: SpanExporter
        if settings.otel_exporter == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporter = ConsoleSpanExporter()
        else:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
    except ImportError as e:
        log.warning(
            "INFERQ_OTEL_ENABLED is set but %s is missing (pip install inferq[otel]): no spans", e.name
        )
        return None
    return SpanExport.exporting_to(exporter, service)
