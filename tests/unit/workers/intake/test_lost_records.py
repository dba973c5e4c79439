"""The intake's sweep for records the broker lost (issue 15, point 16): a copy the API kept is
published again only once the intake owning its partition has committed past the end offset that
partition had when the copy was first found unread, never while the record may wait in a backlog."""

from __future__ import annotations

import json

from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition

from schemas.naming import ADMITTED_HEADER
from schemas.settings import Settings
from tests.fakes import FakeProducer, FakeStore
from workers.intake.lost import LostRecords

S = Settings(republish_unseen_after_s=1)
TOPIC = "inferq.requests"
RID = "lost-record-000000001"
WIRE = json.dumps({"request_id": RID, "task": "embed"})
HANDOFF = ("inferq:result:" + RID, WIRE)  # what the store reports unseen
TP = TopicPartition(TOPIC, (murmur2(RID.encode()) & 0x7FFFFFFF) % 4)


class FakeConsumer:
    def __init__(self, mine: set[TopicPartition]) -> None:
        self.mine, self.end, self.done = mine, 10, 0

    def partitions_for_topic(self, topic):
        return {0, 1, 2, 3}

    def assignment(self):
        return self.mine

    def end_offsets(self, tps, timeout_ms=None):
        return dict.fromkeys(tps, self.end)

    def committed(self, tp, timeout_ms=None):
        return self.done


def sweep(lost: LostRecords, consumer: FakeConsumer) -> int:
    lost._next = 0.0
    return lost.sweep(consumer)


def test_published_again_only_once_committed_past_the_end_seen_first():
    store, producer, consumer = FakeStore([HANDOFF]), FakeProducer(), FakeConsumer({TP})
    lost = LostRecords(S, store, producer)
    assert sweep(lost, consumer) == 0  # first found: its partition's end offset (10) is noted
    consumer.end, consumer.done = 25, 7  # a backlog: the record may still be in it
    assert sweep(lost, consumer) == 0 and not producer.sent
    consumer.done = 10  # committed past where it would be: lost
    assert sweep(lost, consumer) == 1
    assert producer.sent == [(TOPIC, RID.encode(), WIRE.encode(), [(ADMITTED_HEADER, b"1")])]
    assert store.bumped == ["inferq:result:" + RID]


def test_another_intakes_partition_is_left_to_it():
    others = {TopicPartition(TOPIC, p) for p in range(4)} - {TP}
    store, producer, consumer = FakeStore([HANDOFF]), FakeProducer(), FakeConsumer(others)
    lost = LostRecords(S, store, producer)
    consumer.done = 99
    assert sweep(lost, consumer) == 0 and sweep(lost, consumer) == 0 and not producer.sent


def test_a_copy_that_was_read_meanwhile_is_forgotten():
    store, producer, consumer = FakeStore([HANDOFF]), FakeProducer(), FakeConsumer({TP})
    lost = LostRecords(S, store, producer)
    sweep(lost, consumer)
    store.found = []
    sweep(lost, consumer)
    assert lost.marks == {}
