"""Sending dead letters to the dead-letter topic, checked.

:func:`send` returns the future, and callers wait on it before committing past the record. A
per-record refusal (:data:`PERMANENT`) is not worth retrying: retrying it would stop the partition
for ever, so :func:`deliver` answers it with a minimal letter (:func:`schemas.results.minimal`).
"""

from __future__ import annotations

import logging

from kafka import KafkaProducer
from kafka.errors import (
    InvalidRecordError,
    InvalidTopicError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from kafka.producer.future import FutureRecordMetadata

from schemas.naming import deadletter_topic
from schemas.results import Letter, minimal
from schemas.settings import Settings

log = logging.getLogger(__name__)

# per-record refusals: sending the same letter again is refused again
PERMANENT: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    InvalidTopicError,
)


def send(producer: KafkaProducer, settings: Settings, letter: Letter) -> FutureRecordMetadata:
    """Send ``letter`` to the dead-letter topic; the future says whether the broker took it (a
    refusal the producer makes before sending, such as a size check, is raised here)."""
    return producer.send(
        deadletter_topic(settings), key=letter.key, value=letter.value, headers=letter.headers
    )


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
