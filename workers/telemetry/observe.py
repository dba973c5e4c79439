"""The pipeline's telemetry: an :class:`~schemas.observer.Observer` that turns events into
Prometheus metrics and ECS log records, wired into each process at start.

The core loops only call their observer; what is done with each event lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from schemas.messages import InferenceResult
from schemas.observer import BatchStats, Observer, StepStats
from schemas.settings import Settings
from workers.telemetry import events, metrics
from workers.telemetry.events import log_batch, log_result, log_results
from workers.telemetry.liveness import record_poll


class Telemetry(Observer):
    """Metrics and logs for every event (one per process; ``settings`` names the intake replica)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

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
        )
        metrics.record_batch(stats.model, stats.size, stats.tokens, stats.padding_waste, stats.compute_ms)

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
