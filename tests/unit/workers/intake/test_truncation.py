"""TruncationWatch on a fake log: a cut below what the intake read is found and rewound, however
far the log was refilled; an intact log is left alone; trimming keeps the stretch to compare."""

from __future__ import annotations

from kafka.errors import CorruptRecordError

from tests.unit.workers.intake.fakes import TP, Log
from workers.intake.truncation import TruncationWatch

EVERY_S = 2.0


class Consumer:
    def __init__(self) -> None:
        self.seeks: list[int] = []

    def assignment(self):
        return {TP}

    def seek(self, tp, offset):
        self.seeks.append(offset)


class Clock:
    t = 0.0

    def __call__(self) -> float:
        self.t += 0.001
        return self.t


def watch(log: Log) -> TruncationWatch:
    clock = Clock()
    w = TruncationWatch(lambda: log, EVERY_S, clock)
    clock.t += EVERY_S
    return w


def test_an_intact_log_is_left_alone_and_becomes_the_anchor():
    log, consumer = Log(), Consumer()
    w = watch(log)
    for _ in range(3):
        w.handled({TP: log.write(5, "a")})
    assert w.check(consumer) == {} and consumer.seeks == []
    assert w.trimmable({TP: 15}) == {TP: 15}  # read back: all may go
    w.handled({TP: log.write(5, "b")})
    assert w.trimmable({TP: 20}) == {TP: 15}  # 15-19 not read back yet: kept for the next check


def test_a_cut_below_what_was_read_is_rewound_even_when_refilled_past_it():
    log, consumer = Log(), Consumer()
    w = watch(log)
    w.handled({TP: log.write(10, "a")})  # 0-9
    w.check(consumer)  # anchor 9
    w.handled({TP: log.write(10, "b")})  # 10-19 read by the intake
    log.cut(12)  # the broker lost 12-19
    w.handled({TP: log.write(20, "c")})  # 12-31: 12-19 were never read; the intake read 20-31
    assert w.check(consumer) == {TP: 10} and consumer.seeks == [10]  # just after the anchor


def test_a_cut_below_the_anchor_rewinds_to_the_start_of_the_log():
    log, consumer = Log(), Consumer()
    w = watch(log)
    w.handled({TP: log.write(10, "a")})
    w.check(consumer)
    log.cut(3)
    log.write(20, "c")
    assert w.check(consumer) == {TP: 0}


def test_a_cut_not_yet_refilled_is_found_too():
    log, consumer = Log(), Consumer()
    w = watch(log)
    w.handled({TP: log.write(10, "a")})
    w.check(consumer)
    w.handled({TP: log.write(10, "b")})
    log.cut(15)
    assert w.check(consumer) == {TP: 10}


def test_nothing_is_trimmed_before_it_was_read_back():
    log = Log()
    w = watch(log)
    w.handled({TP: log.write(10, "a")})
    assert w.trimmable({TP: 10}) == {}


def test_off_remembers_nothing_and_trims_what_was_committed():
    log = Log()
    w = TruncationWatch(lambda: log, 0.0)
    w.handled({TP: log.write(10, "a")})
    assert not w.due() and w.trimmable({TP: 10}) == {TP: 10}


class Unpackable(Log):
    """A log with a record the Kafka client cannot unpack: polls at it raise, as kafka-python does."""

    bad = -1

    def poll(self, timeout_ms, max_records):
        if self._pos == self.bad:
            raise CorruptRecordError("a header name that is not UTF-8")
        got = self.records[
            self._pos : min(self._pos + max_records, self.bad if self._pos < self.bad else 1 << 30)
        ]
        self._pos += len(got)
        return {TP: got} if got else {}

    def position(self, tp):
        return self._pos


def test_a_record_nobody_can_unpack_does_not_stop_the_read_back():
    """Before: every check raised on it, so the partition was never verified again (and its marks
    piled up); the intake skipped it (never marked): the read-back steps over it too."""
    log, consumer = Unpackable(), Consumer()
    w = watch(log)
    w.handled({TP: log.write(5, "a")})  # 0-4
    w.check(consumer)  # anchor 4
    before = log.write(3, "b")  # 5-7
    log.bad = len(log.records)
    log.write(1, "x")  # 8: unreadable, skipped by the intake
    after = log.write(3, "c")  # 9-11
    w.handled({TP: before})
    w.handled({TP: after})
    assert w.check(consumer) == {} and consumer.seeks == []
    assert w.trimmable({TP: 12}) == {TP: 12}  # all of it verified


class Rebalancing(Consumer):
    """A consumer mid-rebalance: it holds no partition for a while."""

    def __init__(self) -> None:
        super().__init__()
        self.assigned: set = set()

    def assignment(self):
        return self.assigned


def test_a_check_mid_rebalance_keeps_the_marks_and_finds_the_cut_afterwards():
    """A restarted broker holds the group rebalancing; a check then (no partition assigned) used to
    forget every mark, so a cut made meanwhile was never noticed and its refilled offsets skipped."""
    log, consumer = Log(), Rebalancing()
    w = watch(log)
    w.handled({TP: log.write(10, "a")})  # 0-9
    consumer.assigned = {TP}
    w.check(consumer)  # anchor 9
    w.handled({TP: log.write(10, "b")})  # 10-19 read by the intake
    consumer.assigned = set()
    log.cut(12)  # the broker restarts and loses 12-19
    assert w.check(consumer) == {}  # mid-rebalance: nothing judged, nothing forgotten
    log.write(10, "c")  # 12-21: new records take the lost offsets
    consumer.assigned = {TP}
    assert w.check(consumer) == {TP: 10} and consumer.seeks == [10]
