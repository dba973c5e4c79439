"""The structured records operators search: one per request, one per batch, one per write.

A request's record is written once, when its result becomes terminal, by whichever process made
it so (worker, intake, API); it carries the time spent in each stage. It is made where it is read:
when records are shipped to Elasticsearch (every request's record must be findable there), or at
``DEBUG``. Otherwise, and on stderr beside shipping, one record per store write (a batch's results)
names the requests it ended, so a request id is still found in the log with no per-request
formatting on the hot path. A batch's record is written by the worker after each forward pass.
Field names are in :mod:`workers.telemetry.template`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from schemas.messages import GenerationOutput, InferenceResult, ResultStatus

log = logging.getLogger("inferq.events")

REQUEST_DATASET = "inferq.request"
BATCH_DATASET = "inferq.batch"
RESULTS_DATASET = "inferq.results"
# trace ids named by one batch's (or one store write's) record: Kibana finds the batch from any of
# its requests' trace ids; a bound, so a record stays small whatever the batch size
TRACE_IDS_MAX = 256


def _span(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(max(0.0, b - a), 3)


def request_fields(result: InferenceResult) -> dict[str, Any]:
    """The ECS fields of one request's record (dotted names; ``None`` values left out)."""
    t = result.timings
    durations = {
        "kafka": _span(t.published_ms, t.received_ms),
        "intake": _span(t.received_ms, t.queued_ms),
        "queue": _span(t.queued_ms, t.batch_start_ms),
        "compute": _span(t.batch_start_ms, t.done_ms),
        "total": _span(t.published_ms or t.received_ms, t.done_ms),
        "first_token": _span(t.published_ms or t.received_ms, t.first_token_ms),
    }
    total = durations["total"]
    fields: dict[str, Any] = {
        "event.dataset": REQUEST_DATASET,
        "event.action": result.status.value,
        "event.outcome": "success" if result.status is ResultStatus.DONE else "failure",
        "event.duration": int(total * 1_000_000) if total is not None else None,  # ECS: nanoseconds
        "inferq.stage": "finished",
        "inferq.request_id": result.request_id,
        "inferq.status": result.status.value,
        "inferq.tenant": result.tenant,
        "inferq.model": result.model,
        "inferq.model_version": result.model_version,
        "inferq.task": result.task.value if result.task else None,
        "inferq.batch_id": t.batch_id,
        "inferq.batch.size": t.batch_size,
        "inferq.error_code": result.error.code.value if result.error else None,
        "inferq.inputs": len(result.outputs) if result.outputs else None,
        "trace.id": result.trace_id,
        "span.id": result.span_id,
        "inferq.cache.hits": len(result.cached) if result.cached else None,
    }
    fields.update({f"inferq.duration_ms.{k}": v for k, v in durations.items()})
    generated = [o for o in result.outputs or [] if isinstance(o, GenerationOutput)]
    if generated:
        fields["inferq.generated_tokens"] = sum(o.tokens for o in generated)
        reasons = sorted({o.finish_reason.value for o in generated if o.finish_reason})
        if reasons:  # a keyword field: one value, or the list when the inputs ended differently
            fields["inferq.finish_reason"] = reasons[0] if len(reasons) == 1 else reasons
    return {k: v for k, v in fields.items() if v is not None}


def trace_ids(ids: Iterable[str | None]) -> list[str]:
    """The distinct trace ids among ``ids``, at most ``TRACE_IDS_MAX`` (first seen first)."""
    out = list(dict.fromkeys(i for i in ids if i))
    return out[:TRACE_IDS_MAX]


def log_result(result: InferenceResult) -> None:
    fields = request_fields(result)
    level = logging.INFO if result.status is ResultStatus.DONE else logging.WARNING
    total = fields.get("inferq.duration_ms.total")
    log.log(level, "request %s %s after %s ms", result.request_id, result.status.value, total, extra=fields)


def log_results(results: Sequence[InferenceResult]) -> None:
    """One record for the results one store call ended: their ids, and how many of each status."""
    if not results:
        return
    statuses = Counter(r.status.value for r in results)
    failed = len(results) - statuses.get(ResultStatus.DONE.value, 0)
    first = results[0]
    log.log(
        logging.WARNING if failed else logging.INFO,
        "%d results written (%s): %s",
        len(results),
        ", ".join(f"{n} {s}" for s, n in sorted(statuses.items())),
        " ".join(r.request_id for r in results),
        extra={
            "event.dataset": RESULTS_DATASET,
            "event.action": "written",
            "event.outcome": "failure" if failed else "success",
            "inferq.stage": "finished",
            "inferq.model": first.model,
            "inferq.batch_id": first.timings.batch_id,
            "inferq.request_ids": [r.request_id for r in results],
            "inferq.results.count": len(results),
            "inferq.results.failed": failed,
            "trace.id": trace_ids(r.trace_id for r in results) or None,
        },
    )


def log_batch(
    *,
    model: str,
    model_version: str,
    batch_id: str,
    size: int,
    tokens: int,
    padded_tokens: int,
    padding_waste: float,
    compute_ms: float,
    failed: int,
    device: str,
    span_id: str = "",
    trace_ids: list[str] | None = None,
) -> None:
    """One record per forward pass; ``span.id`` its own span, ``trace.id`` its requests' traces."""
    extra: dict[str, Any] = {}
    if span_id:
        extra["span.id"] = span_id
    if trace_ids:
        extra["trace.id"] = trace_ids
    log.info(
        "batch %s %s: %d texts, %d tokens (%d padded, %.0f%% waste), %.1f ms, %d failed",
        model,
        batch_id,
        size,
        tokens,
        padded_tokens,
        100 * padding_waste,
        compute_ms,
        failed,
        extra={
            "event.dataset": BATCH_DATASET,
            "event.action": "batch",
            "event.outcome": "failure" if failed else "success",
            "event.duration": int(compute_ms * 1_000_000),
            "inferq.stage": "batch",
            "inferq.model": model,
            "inferq.model_version": model_version,
            "inferq.batch_id": batch_id,
            "inferq.batch.size": size,
            "inferq.batch.tokens": tokens,
            "inferq.batch.padded_tokens": padded_tokens,
            "inferq.batch.padding_waste": round(padding_waste, 4),
            "inferq.batch.compute_ms": round(compute_ms, 3),
            "inferq.batch.failed": failed,
            "inferq.batch.device": device,
            **extra,
        },
    )
