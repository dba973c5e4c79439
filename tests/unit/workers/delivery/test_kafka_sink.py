"""The Kafka sink against a producer that waits for topic metadata, as kafka-python's does."""

from __future__ import annotations

import time

from kafka.errors import KafkaTimeoutError

from schemas.settings import Settings
from workers.delivery.kafka_sink import KafkaSink
from workers.delivery.sink import Delivery

METADATA_WAIT_S = 0.2  # what the producer waits for a topic's metadata (max_block_ms) before giving up


class Done:
    is_done = True

    def failed(self) -> bool:
        return False


class Metadata:
    def __init__(self, known: set[str]) -> None:
        self.known = known

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        return {0} if topic in self.known else None


class MetadataWaitingProducer:
    """Sends to known topics at once; a send to a topic the broker never reports (it does not exist
    and the broker does not create topics) blocks for the metadata wait, then times out."""

    def __init__(self, known: set[str]) -> None:
        self._metadata = Metadata(known)
        self.sent: list[str] = []

    def send(self, topic: str, key: bytes, value: bytes, headers: object = None) -> Done:
        if topic not in self._metadata.known:
            time.sleep(METADATA_WAIT_S)
            raise KafkaTimeoutError(f"Failed to update metadata after {METADATA_WAIT_S} secs.")
        self.sent.append(topic)
        return Done()

    def flush(self, timeout: float | None = None) -> None:
        pass


def test_topics_without_metadata_cost_one_send_timeout_per_batch_not_one_each():
    """A tenant allowed a prefix (``mallory:mallory.*``) naming a new topic in every request, on a
    broker that does not create topics: each send used to wait for metadata in turn, so one batch
    of its results held the delivery service for that wait times the batch (and every other
    tenant's results behind them). Now sends to known topics go first, and sends to unknown ones
    stop once the batch's send timeout is spent (retried later)."""
    settings = Settings(reply_topics="mallory:mallory.*,acme:acme.out", delivery_send_timeout_s=0.3)
    sink = KafkaSink(settings)
    sink._producer = MetadataWaitingProducer({"acme.out"})
    batch = [Delivery(f"m-{i}", "mallory", f"mallory.t{i}", b"{}") for i in range(20)]
    batch.append(Delivery("a-1", "acme", "acme.out", b"{}"))
    started = time.monotonic()
    out = sink.send_many(batch)
    assert time.monotonic() - started < 1.0  # one by one: 20 x 0.2 s
    assert out[-1] is None  # acme's result is sent
    assert all(f is not None and f.reason == "timeout" and f.retryable for f in out[:-1])
