"""workers.intake.consumer mends kafka-python: a batch that failed to unpack is dropped, not looped on."""

from __future__ import annotations

import pytest
from kafka.consumer.fetcher import Fetcher
from kafka.errors import CorruptRecordError
from kafka.record.memory_records import MemoryRecords, MemoryRecordsBuilder
from kafka.structs import TopicPartition

import workers.intake.consumer  # noqa: F401  (applies the mend)


class RawName(str):
    """A header name that encodes to bytes that are not UTF-8, as librdkafka can write."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe"


def batch() -> MemoryRecords:
    """Offsets 0 and 1 readable, 2 with a header name that is not UTF-8."""
    builder = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=1 << 20)
    builder.append(timestamp=None, key=None, value=b"{}", headers=[])
    builder.append(timestamp=None, key=None, value=b"{}", headers=[])
    builder.append(timestamp=None, key=None, value=b"{}", headers=[(RawName("x"), b"v")])
    builder.close()
    return MemoryRecords(builder.buffer())


def test_a_batch_that_fails_to_unpack_leaves_the_line() -> None:
    part = Fetcher.PartitionRecords(0, TopicPartition("t", 0), batch())
    assert len(part.take(10)) == 2  # the readable ones; the error waits for the next take
    with pytest.raises(CorruptRecordError):
        part.take(10)
    # before: still truthy with a dead iterator, so the fetcher kept it next in line and every
    # later poll() looped on it for ever, taking nothing
    assert not part


def test_the_coordinator_calls_rejoin_uses_are_there():
    """PlainConsumer.rejoin leans on three of kafka-python's coordinator methods (contract)."""
    from kafka.coordinator.consumer import ConsumerCoordinator

    for name in ("generation_if_stable", "request_rejoin", "ensure_active_group"):
        assert callable(getattr(ConsumerCoordinator, name, None)), name
