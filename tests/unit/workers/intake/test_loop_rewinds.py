"""The intake loop's rewinds during a backpressure pause, on fakes of the consumer and the log.

Found by a hostile review of the truncation fixes: records the pause's skim answers must be marked
for the truncation watch (a cut among them is noticed), and a rewind found during a pause must
move the group's committed offset back too (an intake that takes the partition over during the
pause, or this one restarted, starts from it).
"""

from __future__ import annotations

from types import SimpleNamespace

from schemas.observer import Observer
from tests.unit.workers.intake.fakes import TP, GroupConsumer, Log
from workers.intake.backpressure import Backpressure, PartitionHold
from workers.intake.loop import Intake
from workers.intake.stall import StallWatch
from workers.intake.trim import CommittedTrim
from workers.intake.truncation import TruncationWatch


class Clock:
    t = 0.0

    def __call__(self):
        return self.t


class TIntake(Intake):
    def __init__(self, log, counts):
        self.s = SimpleNamespace(kafka_poll_wait_ms=1, kafka_poll_timeout_ms=1, kafka_max_poll_records=500)
        self.observer = Observer()
        self.consumer = GroupConsumer(log)
        self.backpressure = Backpressure(lambda ms: {m: counts[m] for m in ms}, ["a"], 100, 0.8)
        self.hold = PartitionHold(self.backpressure)
        self.stall = StallWatch()
        self.clock = Clock()
        self.truncation = TruncationWatch(lambda: log, 2.0, clock=self.clock)
        self.trim = CommittedTrim(lambda: None, 0)
        self.handled_offsets: list[tuple[int, bytes]] = []
        self.counts = counts

    def handle(self, polled):
        for recs in polled.values():
            self.handled_offsets += [(r.offset, r.value) for r in recs]
        return sum(map(len, polled.values()))

    def _needs_no_room(self, record):
        return record.value == b"expired"

    def set_load(self, n):
        self.counts["a"] = n
        self.backpressure._next_check = 0.0

    def check(self):
        self.clock.t += 10
        self._check_truncation()


def test_a_cut_inside_a_skimmed_stretch_is_noticed_and_what_took_it_is_read_on_resume():
    log = Log()
    intake = TIntake(log, {"a": 0})
    log.write(10, "old")
    assert intake.step() == 10  # 0-9 handled, marked, committed at 10
    intake.check()  # all in place: anchor = 9
    intake.set_load(100)  # the bound is reached: paused
    log.write(10, "expired")  # 10-19: past their deadline
    intake.hold._skimmed_s = 0.0
    assert intake.step() == 10  # skimmed: answered and committed past; held moves to 20
    assert intake.hold.held == {TP: 20}
    log.cut(12)  # the broker loses 12-19 ...
    log.write(14, "new")  # ... and new requests take offsets 12-25
    intake.check()  # the skim marked 19: the cut is found, 12-19 are read again
    intake.set_load(0)
    while intake.step():
        pass
    new_read = {o for o, v in intake.handled_offsets if v == b"new"}
    assert set(range(12, 26)) <= new_read, f"new records never read: {sorted(set(range(12, 26)) - new_read)}"


def test_a_rewind_during_a_pause_is_committed_so_a_handover_in_the_pause_reads_it():
    log = Log()
    intake = TIntake(log, {"a": 0})
    log.write(5, "old")
    intake.step()
    intake.check()  # anchor = 4
    log.write(5, "old")
    intake.step()  # 5-9 handled, committed at 10, mark 9
    intake.set_load(100)
    intake.step()  # paused, held at 10
    log.cut(5)  # broker lost 5-9 ...
    log.write(20, "new")  # ... new requests 5-24 (not expired: they wait in Kafka)
    intake.check()
    assert intake.hold.held == {TP: 5}  # resumes at 5 …
    for _ in range(5):
        intake.hold._skimmed_s = 0.0
        intake.step()  # still paused (skim finds nothing that needs no room)
    # … and an intake that takes the partition over now (this one died, or a rebalance moved it)
    # starts at the group's committed offset
    assert intake.consumer.committed[TP] <= 5, (
        f"committed offset still {intake.consumer.committed[TP]}: 5-9 skipped"
    )
