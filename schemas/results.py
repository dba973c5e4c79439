"""The one place every :class:`~schemas.messages.InferenceResult` and
:class:`~schemas.messages.DeadLetter` is built.

A new result field, or a new way for a request to end, touches this module and no other builder:
the store, the intake, the worker's engines and the API all take their results from here.

A letter must always reach the dead-letter topic: a record refused for being too large, or full
of bytes that each become a 3-byte U+FFFD (escapes double that), would otherwise make a letter
over the producer's ``max_request_size``, refused for ever. So the embedded payload is cut until
the letter's JSON fits ``INFERQ_DEADLETTER_MAX_BYTES`` (kept below the producer's limit), and the
original's size and SHA-256 go with it; the error's ``detail`` and the key are bounded too.
Sending is :mod:`workers.transport.letters`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from schemas.errors import InferqError
from schemas.messages import (
    DeadLetter,
    EmbeddingEncoding,
    EmbeddingOutput,
    ErrorInfo,
    InferenceRequest,
    InferenceResult,
    PackedFloats,
    ResultStatus,
    Task,
    Timings,
)
from schemas.settings import Settings
from schemas.tracing import TraceContext


def result(
    request: InferenceRequest,
    status: ResultStatus,
    timings: dict[str, Any],
    error: InferqError | None = None,
    *,
    model_version: str | None = None,
    outputs: Sequence[Any] | None = None,
    cached: Sequence[int] | None = None,
    trace: TraceContext | None = None,
) -> InferenceResult:
    """The result of ``request``: ``outputs`` when the model ran, ``error`` when it failed;
    ``cached``: indices of the outputs read from the result cache (left out when none were);
    ``trace``: the request's span (its trace id goes in the result, its span id to the log records)."""
    built = InferenceResult(
        request_id=request.request_id,
        status=status,
        task=request.task,
        model=request.model,
        model_version=model_version,
        tenant=request.tenant,
        outputs=list(outputs) if outputs is not None else None,
        cached=sorted(cached) if cached and outputs is not None else None,
        error=error.info() if error else None,
        timings=Timings(**timings),
        trace_id=trace.trace_id if trace is not None else None,
    )
    built._pinned = request.model_version is not None
    return traced(built, trace)


def traced(result: InferenceResult, trace: TraceContext | None) -> InferenceResult:
    """``result`` naming ``trace``'s span in its log records (``span.id``; never serialized)."""
    if trace is not None:
        result._span_id = trace.span_id
    return result


def embedding(vector: str, encoding: EmbeddingEncoding | None = None) -> EmbeddingOutput:
    """One input's embedding as a worker wrote it: a :class:`~schemas.messages.PackedFloats` JSON
    array (``encoding`` None or float), or the base64 text of its bytes. Not validated again: the
    runner made it from the model's own output, and validating 384 floats costs more than the
    model's bookkeeping does (the API reads it back validated, as any result)."""
    if encoding in (None, EmbeddingEncoding.FLOAT):
        return EmbeddingOutput.model_construct(embedding=PackedFloats(vector))
    return EmbeddingOutput.model_construct(embedding=vector, encoding=encoding)


_EMBEDDING_HEAD = '{"kind":"embedding","embedding":'
_NO_OUTPUTS = ',"outputs":null,'


def result_json(result: InferenceResult) -> str:
    """The JSON the store keeps for ``result``: byte for byte ``result.model_dump_json()``, with
    packed embeddings written as they are (no float parsed or formatted again). The fields before
    ``outputs`` are strings, enums and a literal, so the first ``,"outputs":null,`` of the result
    dumped without outputs is the field itself (a quote inside a string is escaped)."""
    outputs = result.outputs
    if not outputs or not any(
        isinstance(o, EmbeddingOutput) and isinstance(o.embedding, PackedFloats) for o in outputs
    ):
        return result.model_dump_json()
    parts = [
        _EMBEDDING_HEAD + o.embedding + "}"
        if isinstance(o, EmbeddingOutput) and isinstance(o.embedding, PackedFloats) and o.encoding is None
        else o.model_dump_json()
        for o in outputs
    ]
    head, _, tail = result.model_copy(update={"outputs": None}).model_dump_json().partition(_NO_OUTPUTS)
    return f'{head},"outputs":[{",".join(parts)}],{tail}'


def queued_result(
    request: InferenceRequest, timings: dict[str, Any], trace: TraceContext | None = None
) -> InferenceResult:
    """The first result a request has: ``queued``, with the timings known so far."""
    return result(request, ResultStatus.QUEUED, timings, trace=trace)


def salvaged_result(
    request_id: str,
    error: ErrorInfo,
    timings: Timings,
    *,
    tenant: Any = None,
    task: Any = None,
    model: Any = None,
    trace: TraceContext | None = None,
) -> InferenceResult:
    """The failed answer to a request that could not be read whole: only what was salvaged from it
    (its id and, when well-formed, tenant, task and model) goes with the error. Never raises over
    what was salvaged: they are the raw fields of a request that did not validate."""
    built = InferenceResult(
        request_id=request_id,
        status=ResultStatus.FAILED,
        task=task if isinstance(task, str) and task in {t.value for t in Task} else None,
        model=model if isinstance(model, str) else None,
        tenant=tenant if isinstance(tenant, str) else None,
        error=error,
        timings=timings,
        trace_id=trace.trace_id if trace is not None else None,
    )
    return traced(built, trace)


KEY_MAX_BYTES = 1_024  # a record key is kept up to this (a Kafka key may be as large as the record)
FRAMING_BYTES = 16_384  # the record's key, headers and batch framing, beside the letter's JSON
TEXT_MAX_CHARS = 2_000  # an error's message and hint, in a letter that does not fit otherwise
DETAIL_MAX_ITEMS = 20  # of a list ``detail`` (a validation error per bad input, say)


def letter_cap(settings: Settings) -> int:
    """The most one letter's JSON may take, in bytes: the setting, kept under the producer's limit."""
    return max(1_024, min(settings.deadletter_max_bytes, settings.kafka_max_request_bytes - FRAMING_BYTES))


class Letter(NamedTuple):
    """A letter ready to send: the record's key, value and headers, and the letter itself."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    letter: DeadLetter


def dead_letter(
    settings: Settings,
    error: ErrorInfo,
    payload: bytes | str | None,
    *,
    source_topic: str = "",
    source_partition: int = -1,
    source_offset: int = -1,
    key: bytes | None = None,
    request_id: str | None = None,
    attempts: int = 1,
) -> Letter:
    """A dead letter for ``payload`` (the raw record, or a request's wire JSON) whose JSON fits
    :func:`letter_cap`; never raises on any payload, key or error."""
    raw = payload.encode("utf-8", "replace") if isinstance(payload, str) else (payload or b"")
    cap = letter_cap(settings)
    if isinstance(error.detail, list) and len(error.detail) > DETAIL_MAX_ITEMS:
        error = error.model_copy(update={"detail": error.detail[:DETAIL_MAX_ITEMS]})
    record_key = key[:KEY_MAX_BYTES] if key else None
    fields = dict(
        error=error,
        request_id=request_id,
        source_topic=source_topic[:256],
        source_partition=source_partition,
        source_offset=source_offset,
        key=record_key.decode("utf-8", "replace") if record_key else None,
        payload_bytes=len(raw),
        payload_sha256=hashlib.sha256(raw).hexdigest(),
        attempts=attempts,
        dead_lettered_at=datetime.now(timezone.utc),
    )
    text = raw[:cap].decode("utf-8", "replace")
    truncated = len(raw) > cap
    for _ in range(12):  # each cut is proportional to the excess: a few rounds reach the cap
        letter = DeadLetter(**fields, payload=text, payload_truncated=truncated)
        value = letter.model_dump_json().encode()
        if len(value) <= cap:
            return _letter(record_key, value, letter)
        if not text:
            break
        keep = max(0, len(text) * cap // len(value) - 64)
        text, truncated = text[: min(keep, len(text) - 1)], True
    # still too large without any payload: the error itself is huge (a hostile detail or message)
    small = ErrorInfo(
        code=error.code,
        message=error.message[:TEXT_MAX_CHARS],
        hint=error.hint[:TEXT_MAX_CHARS],
        detail=None,
    )
    letter = DeadLetter(**{**fields, "error": small}, payload="", payload_truncated=bool(raw))
    return _letter(record_key, letter.model_dump_json().encode(), letter)


def _letter(key: bytes | None, value: bytes, letter: DeadLetter) -> Letter:
    return Letter(key, value, [("error_code", letter.error.code.value.encode())], letter)


def minimal(letter: Letter) -> Letter:
    """The same letter without its payload or error detail: what is sent when the broker refused
    the full one for good (a broker limit below ours)."""
    d = letter.letter
    error = d.error.model_copy(
        update={
            "message": d.error.message[:TEXT_MAX_CHARS],
            "hint": d.error.hint[:TEXT_MAX_CHARS],
            "detail": None,
        }
    )
    small = d.model_copy(update={"error": error, "payload": "", "payload_truncated": bool(d.payload_bytes)})
    return _letter(letter.key[:64] if letter.key else None, small.model_dump_json().encode(), small)
