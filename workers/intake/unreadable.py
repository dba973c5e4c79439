"""Records the Kafka client itself cannot unpack: found, dead-lettered and skipped.

kafka-python unpacks a fetched batch as ``poll()`` returns its records, and raises out of
``poll()`` when it cannot: a header *name* that is not UTF-8 (any producer can write one: librdkafka
takes bytes) is a ``CorruptRecordError``, a batch compressed with a codec whose library is missing
or unknown is an ``UnsupportedCodecError``. Worse, the batch that failed stays in the consumer as
the next one in line with a dead iterator, so the following ``poll()`` loops for ever on it inside
the client: the intake stopped reading every partition while its process stayed up.

After such an error the intake asks :func:`find` which records they were (the error does not say):
from each assigned partition's position, a fresh reader reads until a record unpacks, and the
offsets it could not unpack are the ones (a whole compressed batch, for a codec). The intake
dead-letters them by topic, partition and offset (their bytes cannot be read) and seeks past them,
which also drops the dead batch. The search takes at most :data:`FIND_S` seconds and
:data:`MAX_SKIPPED` records per error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer
from kafka.errors import CorruptRecordError, UnsupportedCodecError
from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

# what the client raises out of poll() for a record it cannot unpack (then it is wedged on it)
UNPACK_ERRORS: tuple[type[Exception], ...] = (CorruptRecordError, UnsupportedCodecError)
FIND_S = 20.0  # the most the search takes
MAX_SKIPPED = 5_000  # records found unreadable per search (the rest are found at the next error)
POLL_MS = 200


def find(
    consumer: KafkaConsumer,
    new_reader: Callable[[], KafkaConsumer],
    clock: Callable[[], float] = time.monotonic,
) -> tuple[TopicPartition, list[int]] | None:
    """The first assigned partition whose next records cannot be unpacked, and their offsets (in
    order, consecutive from its position); None when none was found within :data:`FIND_S`."""
    assigned = sorted(consumer.assignment())
    if not assigned:
        return None
    positions = {tp: consumer.position(tp) for tp in assigned}
    reader = new_reader()
    give_up = clock() + FIND_S
    try:
        ends = reader.end_offsets(assigned)
        for tp in assigned:
            offset, end = positions[tp], ends.get(tp, 0)
            if offset is None or offset >= end:
                continue
            reader.assign([tp])
            bad: list[int] = []
            while offset < end and len(bad) < MAX_SKIPPED and clock() < give_up:
                reader.seek(tp, offset)  # a seek also drops the batch a failed poll left behind
                try:
                    if reader.poll(timeout_ms=POLL_MS, max_records=1):
                        break  # readable from here
                except UNPACK_ERRORS:
                    bad.append(offset)
                    offset += 1
            if bad:
                return tp, bad
            if clock() >= give_up:
                break
    finally:
        try:
            reader.close()
        except Exception:  # a reader that failed mid-fetch: closing it is best effort
            log.debug("closing the unreadable-record reader failed", exc_info=True)
    return None
