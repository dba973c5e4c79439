"""The wedged-consumer check with a fake clock and a fake consumer (pure logic)."""

from kafka.errors import KafkaConnectionError
from kafka.structs import TopicPartition

from workers.intake.stall import STALL_AFTER_S, STALL_CHECK_S, StallWatch

TP = TopicPartition("requests", 0)


class Consumer:
    def __init__(self, position=5, end=9):
        self.pos, self.end, self.broker_up = position, end, True

    def assignment(self):
        return {TP}

    def end_offsets(self, tps):
        if not self.broker_up:
            raise KafkaConnectionError("broker away")
        return {tp: self.end for tp in tps}

    def position(self, tp):
        return self.pos


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_a_consumer_behind_that_does_not_move_between_two_checks_is_wedged():
    clock, consumer = Clock(), Consumer()
    watch = StallWatch(clock)
    clock.now += STALL_AFTER_S + 1
    assert not watch.wedged(consumer)  # first look: positions recorded
    clock.now += STALL_CHECK_S
    assert watch.wedged(consumer)


def test_no_verdict_while_fed_recently_caught_up_moving_or_checked_too_soon():
    clock, consumer = Clock(), Consumer()
    watch = StallWatch(clock)
    clock.now += STALL_CHECK_S
    assert not watch.wedged(consumer)  # fed (created) less than STALL_AFTER_S ago
    clock.now += STALL_AFTER_S
    assert not watch.wedged(consumer)
    clock.now += 1
    assert not watch.wedged(consumer)  # checked too soon after the last check
    clock.now += STALL_CHECK_S
    consumer.pos = 6  # it moved: alive
    assert not watch.wedged(consumer)
    clock.now += STALL_CHECK_S
    consumer.pos = consumer.end = 6  # caught up: nothing to fetch
    assert not watch.wedged(consumer)
    clock.now += STALL_CHECK_S
    consumer.broker_up = False
    assert not watch.wedged(consumer)  # the broker is away: no verdict


def test_records_or_a_new_consumer_restart_the_wait():
    clock, consumer = Clock(), Consumer()
    watch = StallWatch(clock)
    clock.now += STALL_AFTER_S + 1
    watch.wedged(consumer)
    watch.fed()
    clock.now += STALL_CHECK_S
    assert not watch.wedged(consumer)
    watch.reset()
    clock.now += STALL_CHECK_S
    assert not watch.wedged(consumer)
