"""Trimming what the intake committed, with a fake admin client and a fake clock (pure logic;
the real broker is in tests/integration/test_trim.py)."""

from kafka.errors import KafkaConnectionError
from kafka.structs import TopicPartition

from workers.intake.trim import OVERDUE_PERIODS, CommittedTrim

P0, P1 = TopicPartition("inferq.requests", 0), TopicPartition("inferq.requests", 1)


class Admin:
    def __init__(self):
        self.calls, self.down, self.closed = [], False, 0

    def delete_records(self, todo, timeout_ms=None):
        if self.down:
            raise KafkaConnectionError("broker away")
        self.calls.append(dict(todo))

    def close(self):
        self.closed += 1


class Clock:
    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


def make(every_s=10.0):
    admin, clock = Admin(), Clock()
    made = []

    def new_admin():
        made.append(admin)
        return admin

    return CommittedTrim(new_admin, every_s, clock), admin, clock, made


def test_trims_only_up_to_the_highest_committed_offsets_once_a_period():
    trim, admin, clock, made = make()
    trim.committed({P0: 5, P1: 3})
    trim.committed({P0: 4})  # an older commit never moves the mark back
    assert not trim.due(idle=True)
    clock.now += 10
    assert trim.due(idle=True)
    assert trim.trim() == 8
    assert admin.calls == [{P0: 5, P1: 3}]
    trim.committed({P1: 7})
    clock.now += 10
    assert trim.trim() == 4 and admin.calls[-1] == {P1: 7}  # P0 has nothing new
    assert not trim.due(idle=True) and trim.trim() == 0 and len(admin.calls) == 2
    assert len(made) == 1  # one admin client, kept


def test_busy_intakes_trim_only_when_overdue():
    trim, _, clock, _ = make()
    clock.now += 10
    assert trim.due(idle=True) and not trim.due(idle=False)
    clock.now += 10 * (OVERDUE_PERIODS - 1)
    assert trim.due(idle=False)


def test_a_failed_trim_is_retried_and_never_raises():
    trim, admin, clock, made = make()
    trim.committed({P0: 9})
    admin.down = True
    clock.now += 10
    assert trim.trim() == 0 and admin.closed == 1  # the client is dropped, made again next time
    admin.down = False
    clock.now += 10
    assert trim.trim() == 9 and admin.calls == [{P0: 9}] and len(made) == 2


def test_off_means_nothing_is_remembered_or_due():
    trim, _, clock, made = make(every_s=0.0)
    trim.committed({P0: 9})
    clock.now += 10_000
    assert not trim.due(idle=True) and not trim.due(idle=False)
    assert trim.trim() == 0 and not made
