"""Records the Kafka client itself cannot unpack: found, dead-lettered and skipped.

kafka-python decodes every header *name* as UTF-8 while it unpacks a fetched batch. Any producer
can write a name that is not UTF-8 (librdkafka takes bytes), and then ``poll()`` raises
``CorruptRecordError``; worse, the batch that failed stays in the consumer as the next one in line
with a dead iterator, so the following ``poll()`` loops for ever on it inside the client. The
intake stopped reading every partition while its process stayed up.

After such an error the intake asks :func:`find` which record it was (the next record of an
assigned partition that a fresh reader cannot unpack either: the error does not say), dead-letters
it (its bytes cannot be read: the letter names its topic, partition and offset) and seeks past it,
which also drops the dead batch. The search reads at most one batch per assigned partition that has
records to read, for at most :data:`FIND_S` seconds in all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from kafka import KafkaConsumer
from kafka.errors import CorruptRecordError
from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

FIND_S = 10.0  # the most the search for the unreadable record takes
POLL_MS = 200


def find(
    consumer: KafkaConsumer,
    new_reader: Callable[[], KafkaConsumer],
    clock: Callable[[], float] = time.monotonic,
) -> list[tuple[TopicPartition, int]]:
    """(partition, offset) of each assigned partition whose next record cannot be unpacked; empty
    when none could be found within :data:`FIND_S`."""
    assigned = sorted(consumer.assignment())
    if not assigned:
        return []
    positions = {tp: consumer.position(tp) for tp in assigned}
    reader = new_reader()
    found: list[tuple[TopicPartition, int]] = []
    give_up = clock() + FIND_S
    try:
        ends = reader.end_offsets(assigned)
        for tp in assigned:
            position = positions[tp]
            if position is None or position >= ends.get(tp, 0):
                continue
            reader.assign([tp])
            reader.seek(tp, position)
            while clock() < give_up:
                try:
                    if reader.poll(timeout_ms=POLL_MS, max_records=1):
                        break  # readable
                except CorruptRecordError:
                    found.append((tp, position))
                    break
            if found or clock() >= give_up:
                break
    finally:
        try:
            reader.close()
        except Exception:  # a reader that failed mid-fetch: closing it is best effort
            log.debug("closing the unreadable-record reader failed", exc_info=True)
    return found
