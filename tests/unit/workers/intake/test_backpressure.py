"""Backpressure decisions on a fake clock and a fake in-flight counter (the drills run it for real)."""

from workers.intake.backpressure import CHECK_FAR_S, CHECK_S, Backpressure


def make(counts):
    return Backpressure(lambda models: {m: counts.get(m, 0) for m in models}, ["a", "b"], 100, 0.8)


def test_a_poll_may_read_only_what_the_fullest_model_has_room_for():
    bp = make({"a": 30, "b": 90})
    assert bp.room(now_s=1.0) == 10 and not bp.paused
    bp.admitted(4)
    assert bp.room(now_s=1.0) == 6  # until the next read of the counters


def test_pauses_at_the_bound_and_resumes_only_below_the_resume_level():
    counts = {"a": 100}
    bp = make(counts)
    assert bp.room(now_s=1.0) == 0 and bp.paused and bp.saturated == ["a"]
    counts["a"] = 85
    assert bp.room(now_s=1.0 + CHECK_S) == 0 and bp.paused  # between 80 and 100: stays paused
    counts["a"] = 80
    assert bp.room(now_s=1.0 + 2 * CHECK_S) == 0 and bp.paused  # 80 is not below 80
    counts["a"] = 79
    assert bp.room(now_s=1.0 + 3 * CHECK_S) == 21 and not bp.paused


def test_counters_are_read_at_most_once_per_check_period():
    reads = []
    bp = Backpressure(lambda models: reads.append(1) or dict.fromkeys(models, 0), ["a"], 100, 0.8)
    for i in range(10):
        bp.room(now_s=5.0 + i * CHECK_S / 10)
    assert len(reads) == 1


def test_far_from_the_bound_a_reading_lasts_longer_until_admissions_bring_it_near():
    reads, counts = [], {"a": 10}
    bp = Backpressure(lambda models: reads.append(1) or {m: counts[m] for m in models}, ["a"], 100, 0.8)
    assert bp.room(now_s=1.0) == 90
    assert bp.room(now_s=1.0 + CHECK_FAR_S / 2) == 90 and len(reads) == 1  # far: still good
    bp.admitted(45, now_s=1.0 + CHECK_FAR_S / 2)  # 45 left: no longer far from the bound
    counts["a"] = 60
    assert bp.room(now_s=1.0 + CHECK_FAR_S / 2 + CHECK_S) == 40 and len(reads) == 2
    assert bp.room(now_s=1.0 + CHECK_FAR_S / 2 + 1.5 * CHECK_S) == 40 and len(reads) == 2
    assert bp.room(now_s=1.0 + CHECK_FAR_S / 2 + 2 * CHECK_S) == 40 and len(reads) == 3  # near: CHECK_S


def test_room_used_up_by_our_own_admissions_is_read_again_at_once():
    reads, counts = [], {"a": 0}
    bp = Backpressure(lambda models: reads.append(1) or {m: counts[m] for m in models}, ["a"], 100, 0.8)
    assert bp.room(now_s=1.0) == 100
    bp.admitted(100, now_s=1.0)
    counts["a"] = 100
    assert bp.room(now_s=1.001) == 0 and bp.paused and len(reads) == 2  # not a cached 0 unpaused


def test_a_partition_rewound_while_paused_resumes_at_the_rewound_offset_not_where_it_paused():
    from kafka.structs import TopicPartition

    from tests.unit.workers.intake.fakes import GroupConsumer, Log
    from workers.intake.backpressure import PartitionHold

    a, b = TopicPartition("t", 0), TopicPartition("t", 1)
    counts = {"a": 100}
    bp = Backpressure(lambda models: {m: counts[m] for m in models}, ["a"], 100, 0.8)
    hold, consumer = PartitionHold(bp), GroupConsumer(Log(), {a: 50, b: 70})
    hold.apply(consumer)
    assert consumer.paused == {a, b} and hold.held == {a: 50, b: 70}
    # the truncation watch found partition a cut back below 50 and sought it back to 40
    consumer.seek(a, 40)
    hold.rewound({a: 40, TopicPartition("t", 9): 3})  # one it does not hold is left alone
    counts["a"] = 0
    bp._next_check = 0.0  # the next apply reads the counters again
    hold.apply(consumer)
    assert not consumer.paused and consumer.pos == {a: 40, b: 70}  # not 50: 40-49 are read
