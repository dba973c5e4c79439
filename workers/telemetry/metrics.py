"""The pipeline's own metrics, recorded in whichever process sees the event.

Processes of the local stack share ``PROMETHEUS_MULTIPROC_DIR`` (set by the stack to
``<state_dir>/metrics``), so counters and histograms from every intake, worker and API process
add up in the exporter (:mod:`ops.metrics.exporter`). Queue depths, consumer lag, requests in
flight and workers up are read at scrape time by the exporter itself, from Kafka and Redis.
Seconds and ratios are the units, as Prometheus expects.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Sequence

from prometheus_client import Counter, Gauge, Histogram

from schemas.messages import InferenceResult

ADMITTED = Counter("inferq_requests_admitted", "Requests the intake accepted and queued", ["model"])
REDELIVERED = Counter(
    "inferq_redeliveries",
    "Requests read again from Kafka (a replay after a crash or rewind), by what the store said",
    ["verdict"],
)
DUPLICATES_REFUSED = Counter(
    "inferq_duplicate_results_refused",
    "Terminal results not written because the request had already ended (a duplicate delivery)",
    ["status"],
)
# ``version``: the served model version (the part after ``@`` of ``model_version``; "none" for a
# result no model made). Bounded: the versions workers load, never a value read from a request.
RESULTS = Counter(
    "inferq_results", "Terminal results written, by status and model version", ["model", "status", "version"]
)
TRACE_IGNORED = Counter(
    "inferq_traceparent_ignored",
    "Requests whose traceparent header was invalid or repeated, ignored (the request started a new trace)",
    ["source"],
)
DEAD_LETTERS = Counter("inferq_dead_letters", "Records sent to the dead-letter topic", ["code"])
LOG_DROPPED = Counter("inferq_log_records_dropped", "Log records dropped (queue or spool full)", ["service"])
INTAKE_LAST_POLL = Gauge(
    "inferq_intake_last_poll_timestamp_seconds",
    "When each intake replica last polled Kafka (Unix seconds; see workers.telemetry.liveness)",
    ["replica"],
    multiprocess_mode="mostrecent",
)
BATCH_SIZE = Histogram(
    "inferq_batch_size", "Texts per forward pass", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
BATCH_TOKENS = Histogram(
    "inferq_batch_tokens",
    "Real (unpadded) tokens per forward pass",
    ["model"],
    buckets=(16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384),
)
PADDING_WASTE = Histogram(
    "inferq_batch_padding_waste_ratio",
    "Share of a forward pass's tokens that were padding",
    ["model"],
    buckets=(0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9),
)
_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
COMPUTE = Histogram("inferq_batch_compute_seconds", "Forward pass time", ["model"], buckets=_LATENCY)
QUEUE_WAIT = Histogram(
    "inferq_queue_wait_seconds", "Handed to Celery → its batch started", ["model"], buckets=_LATENCY
)
LATENCY = Histogram(
    "inferq_request_latency_seconds",
    "Published to Kafka → result written, by final status and model version",
    ["model", "status", "version"],
    buckets=_LATENCY,
)
GENERATED_TOKENS = Counter("inferq_generated_tokens", "Tokens generated (task generate)", ["model"])
DECODE_RUNNING = Histogram(
    "inferq_decode_batch_sequences",
    "Sequences in each decode step (continuous batching keeps this near the cap)",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
FIRST_TOKEN = Histogram(
    "inferq_time_to_first_token_seconds",
    "Published to Kafka → first generated token (task generate)",
    ["model"],
    buckets=_LATENCY,
)
CACHE_HITS = Counter("inferq_cache_hits", "Inputs answered from the result cache", ["model"])
CACHE_MISSES = Counter(
    "inferq_cache_misses",
    "Inputs looked up in the result cache and computed (identical ones once)",
    ["model"],
)
CACHE_ERRORS = Counter(
    "inferq_cache_errors", "Result cache round trips that failed (the inputs were computed)", ["model"]
)


def record_results(results: Sequence[InferenceResult]) -> None:
    """The results one store call wrote, as :func:`record_result` each would, with one metric write
    per (metric, labels, bucket) for the whole call: in multiprocess mode every write takes a lock
    and touches an mmap, tens of microseconds per request when made one by one."""
    latency: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    queue_wait: dict[str, list[float]] = defaultdict(list)
    first_token: dict[str, list[float]] = defaultdict(list)
    for r in results:
        model, t = r.model or "unknown", r.timings
        if t.done_ms is not None and t.published_ms is not None:
            key = (model, r.status.value, _version(r))
            latency[key].append(max(0.0, t.done_ms - t.published_ms) / 1000.0)
        if t.batch_start_ms is not None and t.queued_ms is not None:
            queue_wait[model].append(max(0.0, t.batch_start_ms - t.queued_ms) / 1000.0)
        if t.first_token_ms is not None and t.published_ms is not None:
            first_token[model].append(max(0.0, t.first_token_ms - t.published_ms) / 1000.0)
    for labels, n in Tally((r.model or "unknown", r.status.value, _version(r)) for r in results).items():
        RESULTS.labels(*labels).inc(n)
    for key, seconds in latency.items():
        observe_many(LATENCY.labels(*key), seconds)
    for model, seconds in queue_wait.items():
        observe_many(QUEUE_WAIT.labels(model), seconds)
    for model, seconds in first_token.items():
        observe_many(FIRST_TOKEN.labels(model), seconds)


def _version(result: InferenceResult) -> str:
    """The ``version`` label: the part of ``model_version`` after ``@`` ("none" without one)."""
    mv = result.model_version
    return mv.partition("@")[2] or "none" if mv else "none"


def observe_many(histogram: Histogram, amounts: Sequence[float]) -> None:
    """``histogram.observe(a)`` for each of ``amounts``, writing its sum and each bucket once
    (prometheus_client's own fields; one by one where a version lacks them)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None or len(bounds) != len(buckets):
        for a in amounts:
            histogram.observe(a)
        return
    counts = Tally(bisect_left(bounds, a) for a in amounts)  # the first bound >= a, as observe()
    total.inc(sum(amounts))
    for i, n in counts.items():  # the last bound is +Inf: every amount has its bucket
        buckets[i].inc(n)


def record_result(result: InferenceResult) -> None:
    record_results([result])


def record_refused(result: InferenceResult) -> None:
    DUPLICATES_REFUSED.labels(result.status.value).inc()


def record_batch(model: str, size: int, tokens: int, padding_waste: float, compute_ms: float) -> None:
    BATCH_SIZE.labels(model).observe(size)
    BATCH_TOKENS.labels(model).observe(tokens)
    PADDING_WASTE.labels(model).observe(padding_waste)
    COMPUTE.labels(model).observe(compute_ms / 1000.0)


def record_cache(model: str, hits: int, misses: int, errors: int) -> None:
    for counter, n in ((CACHE_HITS, hits), (CACHE_MISSES, misses), (CACHE_ERRORS, errors)):
        if n:
            counter.labels(model).inc(n)


def record_step(model: str, running: int) -> None:
    """One decode step over ``running`` rows: one token each."""
    GENERATED_TOKENS.labels(model).inc(running)
    DECODE_RUNNING.labels(model).observe(running)


DELIVERIES = Counter(
    "inferq_deliveries",
    "Tries to deliver a terminal result beyond Redis (reply topics, webhooks), by sink and outcome: "
    "sent, retried (failed, tried again later), failed (given up: undeliverable)",
    ["sink", "outcome"],
)


def record_delivery(sink: str, outcome: str, n: int = 1) -> None:
    DELIVERIES.labels(sink, outcome).inc(n)
