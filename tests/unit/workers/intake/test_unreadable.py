"""workers.intake.unreadable.find: which records the Kafka client could not unpack (fakes of the client)."""

from __future__ import annotations

from typing import Any

from kafka.errors import CorruptRecordError, UnsupportedCodecError
from kafka.structs import TopicPartition

from workers.intake.unreadable import MAX_SKIPPED, find

TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


class Consumer:
    def __init__(self, positions: dict[TopicPartition, int]) -> None:
        self.positions = positions

    def assignment(self) -> set[TopicPartition]:
        return set(self.positions)

    def position(self, tp: TopicPartition) -> int:
        return self.positions[tp]


class Reader:
    """A partition's records: ``bad`` offsets raise as kafka-python does; the rest are readable."""

    def __init__(
        self, ends: dict[TopicPartition, int], bad: dict[TopicPartition, set[int]], error: Exception
    ):
        self.ends, self.bad, self.error = ends, bad, error
        self.at: tuple[TopicPartition, int] | None = None
        self.closed = False

    def end_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: self.ends[tp] for tp in tps}

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.at = (tp, offset)

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, Any]:
        assert self.at is not None
        tp, offset = self.at
        if offset in self.bad.get(tp, set()):
            raise self.error
        return {tp: ["a record"]}

    def close(self) -> None:
        self.closed = True


def test_a_compressed_batch_nobody_can_unpack_is_found_whole_on_its_partition() -> None:
    reader = Reader({TP0: 10, TP1: 40}, {TP1: set(range(20, 30))}, UnsupportedCodecError("snappy"))
    found = find(Consumer({TP0: 10, TP1: 20}), lambda: reader)
    assert found == (TP1, list(range(20, 30)))
    assert reader.closed


def test_a_bad_header_name_is_found_and_readable_partitions_are_not_blamed() -> None:
    reader = Reader({TP0: 5, TP1: 9}, {TP1: {7}}, CorruptRecordError("not utf-8"))
    assert find(Consumer({TP0: 3, TP1: 7}), lambda: reader) == (TP1, [7])
    assert find(Consumer({TP0: 3, TP1: 8}), lambda: reader) is None  # nothing unreadable left


def test_the_search_is_bounded() -> None:
    reader = Reader({TP0: 10 * MAX_SKIPPED}, {TP0: set(range(10 * MAX_SKIPPED))}, CorruptRecordError("x"))
    found = find(Consumer({TP0: 0}), lambda: reader)
    assert found is not None and len(found[1]) == MAX_SKIPPED
