"""Noticing a wedged Kafka consumer: no records for a while although its partitions have some.

Seen on the local broker after a restart during a rebalance: kafka-python believed it was still a
member of a group that had no members, and never fetched again. The intake asks
:meth:`StallWatch.wedged` after its empty polls and replaces a wedged consumer with a new one (the
same static member), which rejoins at once and resumes from the committed offsets.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from kafka import KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

# no records for this long while the group's log has some for us = the consumer is wedged
STALL_AFTER_S, STALL_CHECK_S = 10.0, 5.0


class StallWatch:
    """Tracks when a consumer last got records and where its partitions stood at the last check."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # seconds
        self.fed_at = self._checked_at = clock()  # last records; last check
        self._marks: dict[TopicPartition, int] = {}  # positions at the last check

    def fed(self) -> None:
        """The consumer just returned records."""
        self.fed_at = self._clock()

    def reset(self) -> None:
        """A new consumer replaced the old one: it gets ``STALL_AFTER_S`` to fetch."""
        self.fed_at, self._marks = self._clock(), {}

    def wedged(self, consumer: KafkaConsumer) -> bool:
        """True when ``consumer`` has fetched nothing for ``STALL_AFTER_S`` although the log has
        records past its position, and its position did not move between two checks (made at
        most every ``STALL_CHECK_S``)."""
        now = self._clock()
        if now - self._checked_at < STALL_CHECK_S:
            return False
        self._checked_at = now
        assigned = sorted(consumer.assignment())
        if now - self.fed_at < STALL_AFTER_S or not assigned:  # joining is kafka-python's to finish
            self._marks = {}
            return False
        try:
            ends = consumer.end_offsets(assigned)
            marks = {tp: consumer.position(tp) for tp in assigned}
        except KafkaError:
            return False  # the broker is away: nothing to judge by yet
        behind = [tp for tp in assigned if ends.get(tp, 0) > marks[tp]]
        # behind, and not one record further than at the previous check: wedged
        wedged = bool(behind) and marks == self._marks
        self._marks = marks
        return wedged
