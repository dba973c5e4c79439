"""Noticing a requests log that was cut back below the intake's position, and reading it again.

A broker that restarts can lose the tail of a partition it had already served (the local one loses
acknowledged records it had not saved). The intake's position, and the offset it committed, then
lie past the new end of the log, and the next records written take the lost offsets again: a
consumer that simply fetches from its position skips them, for ever (Kafka's own consumers detect
this with leader epochs, KIP-320; kafka-python does not). Seen in the ``broker-restart`` drill: 2
requests of 2,000 never read.

:class:`TruncationWatch` remembers, per partition, a fingerprint (offset, timestamp, key, value
digest) of the last record of each handled poll since the last check. Every ``every_s`` it
reads that stretch of the log back with a consumer of its own (no group), from the last record it
verified (the *anchor*): a cut that made the intake skip records replaced the last record it read
before the cut, and that record's mark is in the stretch (a log is cut only at its tail, so the
records after the cut that the intake read later do not hide it). At the first mark that is gone or
another record, the intake rewinds that partition to just after the last one in place (or to the
start of the log): what is read again is recognised by the result store, what took the lost offsets
is read for the first time (a partition paused by backpressure resumes there too, not where it was
paused: :meth:`~workers.intake.backpressure.PartitionHold.rewound`). The committed-record trim
(:mod:`workers.intake.trim`) deletes only what was read back, so the stretch is still there to compare.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from kafka.structs import TopicPartition

from workers.intake.unreadable import UNPACK_ERRORS

log = logging.getLogger(__name__)

MAX_MARKS = 8_192  # marks kept per partition between checks (the polls of one period, with room)
READ_TIMEOUT_S = 1.0  # the longest one read-back waits for the broker


class Mark(NamedTuple):
    offset: int
    timestamp: int
    key: bytes | None
    digest: bytes


def mark_of(record: Any) -> Mark:
    """The fingerprint of a consumed record."""
    digest = hashlib.blake2b(record.value or b"", digest_size=16).digest()
    return Mark(record.offset, record.timestamp, record.key, digest)


class TruncationWatch:
    """Per partition, the marks of the polls handled since the last verified record; :meth:`check`
    rewinds a consumer past a cut log."""

    def __init__(
        self, new_reader: Callable[[], Any], every_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.every_s = every_s  # 0 = never
        self._new_reader = new_reader  # a KafkaConsumer without a group, made when first needed
        self._reader: Any = None
        self._clock = clock
        self._checked_at = clock()
        self._anchor: dict[TopicPartition, Mark] = {}  # last record verified in place
        self._since: dict[TopicPartition, list[Mark]] = {}  # marks of polls after it, oldest first
        self.rewinds = 0

    def handled(self, polled: dict[TopicPartition, list[Any]]) -> None:
        """The records of this poll were handed off (their commit follows; it may be refused)."""
        if self.every_s <= 0:
            return
        for tp, batch in polled.items():
            if batch:
                marks = self._since.setdefault(tp, [])
                if len(marks) >= MAX_MARKS:
                    del marks[1:-1]  # keep the oldest (the last before a cut is at or after it) and newest
                marks.append(mark_of(batch[-1]))

    def trimmable(self, committed: dict[TopicPartition, int]) -> dict[TopicPartition, int]:
        """What the trim may delete (records before these offsets): of ``committed`` (and of what
        was committed before), only what was read back, up to each partition's anchor; the
        stretch after it is kept for the next check."""
        if self.every_s <= 0:
            return dict(committed)
        return {tp: min(committed.get(tp, a.offset + 1), a.offset + 1) for tp, a in self._anchor.items()}

    def due(self) -> bool:
        return self.every_s > 0 and self._clock() - self._checked_at >= self.every_s

    def check(self, consumer: Any) -> dict[TopicPartition, int]:
        """Read back the marked stretch of each assigned partition; rewind ``consumer`` where the
        log was cut. Returns {partition: offset rewound to}. A broker that does not answer is judged
        at the next check."""
        self._checked_at = self._clock()
        assigned = set(consumer.assignment())
        if not assigned:  # mid-rebalance (a restarted broker holds the group a while): judge later,
            return {}  # with the marks kept; dropping them would hide a cut made meanwhile
        for tp in [tp for tp in {*self._anchor, *self._since} if tp not in assigned]:
            self._anchor.pop(tp, None)  # another replica reads it now
            dropped = self._since.pop(tp, None)
            if dropped:  # a cut among them would go unnoticed here: say so (rare: a rebalance)
                log.info(
                    "truncation watch: %d unchecked marks of %s[%d] dropped (no longer assigned)",
                    len(dropped),
                    tp.topic,
                    tp.partition,
                )
        rewound: dict[TopicPartition, int] = {}
        try:
            for tp in list(self._since):
                anchor = self._anchor.get(tp)
                marks = ([anchor] if anchor else []) + self._since[tp]
                if not marks:
                    continue
                bad = self._first_gone(tp, marks)
                if bad is None:  # cannot tell yet
                    continue
                self._since[tp] = []
                if bad == len(marks):  # all in place
                    self._anchor[tp] = marks[-1]
                    continue
                if bad > 0:
                    self._anchor[tp] = marks[bad - 1]
                    target = marks[bad - 1].offset + 1
                else:
                    self._anchor.pop(tp, None)
                    target = int(self._reader_().beginning_offsets([tp])[tp])
                log.warning(
                    "partition %s[%d] was cut back below offset %d (a broker lost records it had "
                    "served); reading again from %d",
                    tp.topic,
                    tp.partition,
                    marks[bad].offset + 1,
                    target,
                )
                consumer.seek(tp, target)
                rewound[tp] = target
                self.rewinds += 1
        except Exception as e:  # the broker is away: nothing to judge by yet
            log.info("read-back of handled records failed (judged at the next check): %r", e)
            self._drop_reader()
        return rewound

    def _first_gone(self, tp: TopicPartition, marks: list[Mark]) -> int | None:
        """Index of the first mark whose record is gone or another one (len(marks) if none is);
        None when the broker gives no complete answer."""
        reader = self._reader_()
        reader.assign([tp])
        start, end = reader.beginning_offsets([tp])[tp], reader.end_offsets([tp])[tp]
        want = {m.offset: i for i, m in enumerate(marks) if m.offset >= start}  # below start: trimmed
        if not want:  # the usual case while idle after a trim: debug, not every check's info line
            log.debug(
                "truncation watch: %s[%d] starts at %d, past all %d marks (to %d): judged in place",
                tp.topic,
                tp.partition,
                start,
                len(marks),
                marks[-1].offset,
            )
            return len(marks)
        first, last = min(want), max(want)
        if end <= last:  # cut below the newest: everything from the first mark at or past the end
            gone = min(i for off, i in want.items() if off >= end)
            last = max((off for off in want if off < end), default=-1)
            if last < 0:
                return gone
        else:
            gone = len(marks)
        reader.seek(tp, first)
        give_up = self._clock() + READ_TIMEOUT_S
        while self._clock() < give_up:
            try:
                polled = reader.poll(timeout_ms=100, max_records=2_000)
            except UNPACK_ERRORS:  # a record nobody can unpack was skipped, never marked: step over it
                reader.seek(tp, reader.position(tp) + 1)
                continue
            for records in polled.values():
                for rec in records:
                    i = want.get(rec.offset)
                    if i is not None and mark_of(rec) != marks[i]:
                        return min(i, gone)
                    if rec.offset >= last:
                        return gone
        self._drop_reader()  # no answer: its metadata may be stale (a topic made again); a new one next time
        return None

    def _reader_(self) -> Any:
        if self._reader is None:
            self._reader = self._new_reader()
        return self._reader

    def _drop_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                self._reader.close()
        self._reader = None

    def close(self) -> None:
        self._drop_reader()
