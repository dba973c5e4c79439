"""The pipeline's telemetry: an :class:`~schemas.observer.Observer` that turns events into
Prometheus metrics and ECS log records, wired into each process at start.

The core loops only call their observer; what is done with each event lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from schemas.messages import InferenceResult
from schemas.observer import BatchStats, Observer, RequestSpan, StepStats
from schemas.settings import Settings
from workers.telemetry import events, metrics
from workers.telemetry.events import log_batch, log_result, log_results
from workers.telemetry.liveness import record_poll

log = logging.getLogger(__name__)


class Telemetry(Observer):
    """Metrics and logs for every event (one per process; ``settings`` names the intake replica);
    spans too when ``INFERQ_OTEL_ENABLED`` (``spans``: an exporting observer,
    :mod:`workers.telemetry.otel`)."""

    def __init__(self, settings: Settings, spans: Observer | None = None) -> None:
        self.settings = settings
        self.spans = spans if spans is not None else _span_export(settings)

    @property
    def tracing(self) -> bool:
        return self.spans is not None

    def result_written(self, result: InferenceResult) -> None:
        self.results_written([result])

    def results_written(self, results: Sequence[InferenceResult]) -> None:
        """Each request's record where it is read (shipped, or at ``DEBUG``), one record for them all
        on stderr (:mod:`workers.telemetry.events`); the metrics, counted once per status."""
        if self.settings.log_ship or events.log.isEnabledFor(logging.DEBUG):
            for result in results:
                log_result(result)
        log_results(results)
        metrics.record_results(results)
        if self.spans is not None:
            self.spans.results_written(results)

    def result_refused(self, result: InferenceResult) -> None:
        metrics.record_refused(result)

    def batch_done(self, stats: BatchStats) -> None:
        log_batch(
            model=stats.model,
            model_version=stats.model_version,
            batch_id=stats.batch_id,
            size=stats.size,
            tokens=stats.tokens,
            padded_tokens=stats.padded_tokens,
            padding_waste=stats.padding_waste,
            compute_ms=stats.compute_ms,
            failed=stats.failed,
            device=stats.device,
            span_id=stats.span_id,
            trace_ids=events.trace_ids(t.trace_id for t in stats.traces),
        )
        metrics.record_batch(stats.model, stats.size, stats.tokens, stats.padding_waste, stats.compute_ms)
        if self.spans is not None:
            self.spans.batch_done(stats)

    def step_done(self, stats: StepStats) -> None:
        # no log record: a step is a few ms; each request's record carries its totals
        metrics.record_step(stats.model, stats.running)

    def cache_used(self, model: str, hits: int, misses: int, errors: int) -> None:
        metrics.record_cache(model, hits, misses, errors)

    def admitted(self, model: str) -> None:
        metrics.ADMITTED.labels(model).inc()

    def redelivered(self, verdict: str, count: int = 1) -> None:
        metrics.REDELIVERED.labels(verdict).inc(count)

    def dead_lettered(self, code: str, count: int = 1) -> None:
        metrics.DEAD_LETTERS.labels(code).inc(count)

    def polled(self) -> None:
        record_poll(self.settings)

    def trace_ignored(self, source: str) -> None:
        metrics.TRACE_IGNORED.labels(source).inc()

    def request_spans(self, spans: Sequence[RequestSpan]) -> None:
        if self.spans is not None:
            self.spans.request_spans(spans)


def _span_export(settings: Settings) -> Observer | None:
    """The span export the settings ask for (imported only then: the extra may not be installed)."""
    if not settings.otel_enabled:
        return None
    try:
        from workers.telemetry import otel
    except ImportError as e:
        log.warning(
            "INFERQ_OTEL_ENABLED is set but %s is missing (pip install inferq[otel]): no spans", e.name
        )
        return None
    return otel.from_settings(settings)
