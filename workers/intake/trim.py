"""Trimming the requests topic up to what the intake has committed, on brokers where a log kept
forever costs CPU: the local stack's.

noida-db (the local stack's broker) holds its log in memory and rewrites its whole data file as
the log changes, so the cost of every change grows with everything ever published (measured: with
12 MB of log, 9% of a core at 20 requests/s, taken from the model on the same two cores; 0.2% with
an empty log). Apache Kafka's retention settles the size on real clusters, and deleting there would
take records from other readers of the topic, so trimming is off unless configured
(``INFERQ_KAFKA_TRIM_COMMITTED_EVERY_S``; ``inferq-ops up`` sets it for its own broker).

Only what this intake has committed is trimmed: every record before a committed offset has been
validated, recorded in the result store and handed to Celery, and a replay would only be absorbed
by the store. Trims run between polls, at most every ``every_s``; a failed trim is retried at the
next period and never stops the intake.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping

from kafka import KafkaAdminClient
from kafka.structs import TopicPartition

log = logging.getLogger(__name__)

OVERDUE_PERIODS = 6  # records never stop for an idle moment: trim between two polls anyway


class CommittedTrim:
    """Remembers the offsets the intake committed and deletes the records before them."""

    def __init__(
        self,
        new_admin: Callable[[], KafkaAdminClient],
        every_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.every_s = every_s  # 0 = never
        self._new_admin, self._clock = new_admin, clock
        self._admin: KafkaAdminClient | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._trimmed: dict[TopicPartition, int] = {}
        self._last_s = clock()

    def committed(self, offsets: Mapping[TopicPartition, int]) -> None:
        """The intake committed these offsets (the next record to read, per partition)."""
        if self.every_s > 0:
            for tp, offset in offsets.items():
                self._committed[tp] = max(offset, self._committed.get(tp, 0))

    def due(self, *, idle: bool) -> bool:
        """A trim is due: a period has passed (between polls only when ``idle``, unless overdue)."""
        if self.every_s <= 0:
            return False
        waited_s = self._clock() - self._last_s
        return waited_s >= self.every_s * (1 if idle else OVERDUE_PERIODS)

    def trim(self) -> int:
        """Delete the committed records not trimmed yet; returns the records deleted (0 on failure)."""
        self._last_s = self._clock()
        todo = {tp: o for tp, o in self._committed.items() if o > self._trimmed.get(tp, 0)}
        if not todo:
            return 0
        try:
            if self._admin is None:
                self._admin = self._new_admin()
            self._admin.delete_records(todo, timeout_ms=5_000)
        except Exception as e:  # the broker is away or refuses it: the next period tries again
            log.warning("could not trim %d partitions of committed records: %r", len(todo), e)
            self.close()
            return 0
        deleted = sum(o - self._trimmed.get(tp, 0) for tp, o in todo.items())
        self._trimmed.update(todo)
        return deleted

    def close(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
            self._admin = None
