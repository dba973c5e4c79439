"""The one place a :class:`~schemas.messages.DeadLetter` is built and sent.

A letter must always reach the dead-letter topic: a record refused for being too large, or full
of bytes that each become a 3-byte U+FFFD (escapes double that), would otherwise make a letter
over the producer's ``max_request_size``, refused for ever. So the embedded payload is cut until
the letter's JSON fits ``INFERQ_DEADLETTER_MAX_BYTES`` (kept below the producer's limit), and the
original's size and SHA-256 go with it; the error's ``detail`` and the key are bounded too.

Sending is checked: :func:`send` returns the future, and callers wait on it before committing
past the record. A per-record refusal (:data:`PERMANENT`) is not worth retrying: retrying it
would stop the partition for ever, so :func:`deliver` answers it with a minimal letter instead.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime, timezone
from typing import NamedTuple

from kafka import KafkaProducer
from kafka.errors import (
    InvalidRecordError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from kafka.producer.future import FutureRecordMetadata

from schemas.messages import DeadLetter, ErrorInfo
from schemas.naming import deadletter_topic
from schemas.settings import Settings

log = logging.getLogger(__name__)

KEY_MAX_BYTES = 1_024  # a record key is kept up to this (a Kafka key may be as large as the record)
FRAMING_BYTES = 16_384  # the record's key, headers and batch framing, beside the letter's JSON
TEXT_MAX_CHARS = 2_000  # an error's message and hint, in a letter that does not fit otherwise
DETAIL_MAX_ITEMS = 20  # of a list ``detail`` (a validation error per bad input, say)
# per-record refusals: sending the same letter again is refused again
PERMANENT: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    InvalidTopicError,
)


def letter_cap(settings: Settings) -> int:
    """The most one letter's JSON may take, in bytes: the setting, kept under the producer's limit."""
    return max(1_024, min(settings.deadletter_max_bytes, settings.kafka_max_request_bytes - FRAMING_BYTES))


class Letter(NamedTuple):
    """A letter ready to send: the record's key, value and headers, and the letter itself."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    letter: DeadLetter


def build(
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


def send(producer: KafkaProducer, settings: Settings, letter: Letter) -> FutureRecordMetadata:
    """Send ``letter`` to the dead-letter topic; the future says whether the broker took it (a
    refusal the producer makes before sending, such as a size check, is raised here)."""
    return producer.send(
        deadletter_topic(settings), key=letter.key, value=letter.value, headers=letter.headers
    )


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


def deliver(producer: KafkaProducer, settings: Settings, letters: list[Letter], timeout_s: float) -> int:
    """Send ``letters`` and wait until the broker has each one; returns how many were refused for
    good even as minimal letters (logged, and not retried: the record is committed past anyway).

    A transient failure (broker unreachable, timeout) is raised, so the caller rewinds and tries
    the whole poll again rather than commit past a record whose letter was lost.
    """
    pending = [(letter, _send_or_error(producer, settings, letter)) for letter in letters]
    lost = 0
    for letter, sent in pending:
        try:
            _wait(sent, timeout_s)
        except PERMANENT as e:
            log.error(
                "dead letter for %s[%d]@%d refused (%s); sending it without its payload",
                letter.letter.source_topic,
                letter.letter.source_partition,
                letter.letter.source_offset,
                type(e).__name__,
            )
            try:
                _wait(_send_or_error(producer, settings, minimal(letter)), timeout_s)
            except PERMANENT as again:
                lost += 1
                log.error("minimal dead letter refused too (%s); the record is skipped", type(again).__name__)
    return lost


def _send_or_error(
    producer: KafkaProducer, settings: Settings, letter: Letter
) -> FutureRecordMetadata | Exception:
    try:
        return send(producer, settings, letter)
    except PERMANENT as e:
        return e


def _wait(sent: FutureRecordMetadata | Exception, timeout_s: float) -> None:
    if isinstance(sent, Exception):
        raise sent
    sent.get(timeout=timeout_s)
