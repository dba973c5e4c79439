"""What the pipeline tells telemetry: one observer interface the core and the services call.

The store, the engines, the intake and the API call an :class:`Observer`'s named methods at the
moments that matter (a result written, a forward pass done, a record dead-lettered); what is done
with them (Prometheus metrics, ECS log records) is an implementation wired at process start
(:class:`workers.telemetry.observe.Telemetry`), so metrics and logs never sit inline in the hot
path and the core imports no telemetry library. Like dramatiq's middleware: every method is a
no-op here, and an implementation overrides the ones it cares about.

An observer must not raise into the pipeline: :class:`Observers` (the fan-out the core holds)
logs and swallows anything an observer raises, so a broken metric never fails a request.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from schemas.messages import InferenceResult
from schemas.tracing import TraceContext

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchStats:
    """What one forward pass did (times in ms)."""

    model: str
    batch_id: str
    size: int
    tokens: int
    padded_tokens: int
    compute_ms: float
    failed: int
    device: str
    model_version: str
    span_id: str = ""  # the forward pass's own span (ECS ``span.id``), when known
    # the spans of the requests it served (distinct; a link to each from the batch's span)
    traces: tuple[TraceContext, ...] = field(default=(), repr=False)
    started_ms: float | None = None  # epoch ms the forward pass began

    @property
    def padding_waste(self) -> float:
        """Share of the computed tokens that were padding."""
        return 1.0 - self.tokens / self.padded_tokens if self.padded_tokens else 0.0


@dataclass(frozen=True)
class StepStats:
    """What one decode step did (times in ms)."""

    model: str
    running: int  # rows in the step: each produced one token
    joined: int
    step_ms: float


INTAKE_SPAN = "inferq intake"  # received from Kafka -> handed to Celery
API_SPAN = "inferq api"  # received over HTTP -> published to Kafka
PUBLISH_SPAN = "inferq publish"  # the client sent a record -> the broker has it


@dataclass(frozen=True)
class RequestSpan:
    """A service's span for one request it received (epoch ms): ``trace`` is the span (its
    ``parent_id`` the sender's span; None: the request started the trace)."""

    name: str
    trace: TraceContext
    start_ms: float
    end_ms: float
    request_id: str
    model: str | None = None


class Observer:
    """The events telemetry hears about. Every method is a no-op; override what you need."""

    def result_written(self, result: InferenceResult) -> None:
        """A terminal result was written by this process."""

    def results_written(self, results: Sequence[InferenceResult]) -> None:
        """Terminal results written by this process in one store call (a batch): by default each is
        :meth:`result_written`; telemetry overrides it to record a batch at once."""
        for result in results:
            self.result_written(result)

    def result_refused(self, result: InferenceResult) -> None:
        """A terminal result was not written: the request had already ended (a duplicate)."""

    def batch_done(self, stats: BatchStats) -> None:
        """An engine ran one forward pass."""

    def step_done(self, stats: StepStats) -> None:
        """A decoder ran one decode step."""

    def cache_used(self, model: str, hits: int, misses: int, errors: int) -> None:
        """An engine looked a batch's inputs up in the result cache: ``hits`` skipped the model,
        ``misses`` were computed (identical ones once); ``errors``: round trips the cache failed."""

    def admitted(self, model: str) -> None:
        """A new request was accepted and queued (by the intake or the API)."""

    def redelivered(self, verdict: str, count: int = 1) -> None:
        """Requests were read or sent again (a replay, a requeue, a republish), by what happened."""

    def dead_lettered(self, code: str, count: int = 1) -> None:
        """Records went to the dead-letter topic, by error code."""

    def polled(self) -> None:
        """The intake polled Kafka (its liveness stamp)."""

    def trace_ignored(self, source: str) -> None:
        """A request's ``traceparent`` was not valid (or repeated) and was ignored; ``source``:
        ``kafka`` or ``http``. The request goes on in a new trace."""

    def request_spans(self, spans: Sequence[RequestSpan]) -> None:
        """Spans of requests that a service has passed on (the client published them, the intake
        or the API handed them on); called only while :attr:`tracing`."""

    @property
    def tracing(self) -> bool:
        """Whether this observer exports spans: callers build what only spans need when it is set."""
        return False


class Observers(Observer):
    """A fan-out over observers, each call guarded: what the pipeline's objects hold."""

    def __init__(self, observers: Iterable[Observer] = ()) -> None:
        self.observers = list(observers)

    def add(self, observer: Observer) -> None:
        if observer not in self.observers:
            self.observers.append(observer)

    def _each(self, method: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, method)(*args)
            except Exception:
                log.exception("observer %s failed in %s", type(observer).__name__, method)

    def result_written(self, result: InferenceResult) -> None:
        self._each("result_written", result)

    def results_written(self, results: Sequence[InferenceResult]) -> None:
        if results:
            self._each("results_written", results)

    def result_refused(self, result: InferenceResult) -> None:
        self._each("result_refused", result)

    def batch_done(self, stats: BatchStats) -> None:
        self._each("batch_done", stats)

    def step_done(self, stats: StepStats) -> None:
        self._each("step_done", stats)

    def cache_used(self, model: str, hits: int, misses: int, errors: int) -> None:
        self._each("cache_used", model, hits, misses, errors)

    def admitted(self, model: str) -> None:
        self._each("admitted", model)

    def redelivered(self, verdict: str, count: int = 1) -> None:
        self._each("redelivered", verdict, count)

    def dead_lettered(self, code: str, count: int = 1) -> None:
        self._each("dead_lettered", code, count)

    def polled(self) -> None:
        self._each("polled")

    def trace_ignored(self, source: str) -> None:
        self._each("trace_ignored", source)

    def request_spans(self, spans: Sequence[RequestSpan]) -> None:
        self._each("request_spans", spans)

    @property
    def tracing(self) -> bool:
        return any(o.tracing for o in self.observers)
