"""kafka-python's interface over confluent-kafka (schemas/confluent.py): the parts that need no broker
(errors as kafka-python's classes, the futures of sent records). The intake and client run over it
for real in tests/integration/test_confluent_client.py."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from kafka import errors as kerr

from schemas.confluent import RecordMetadata, SentRecord, as_kafka_error

confluent_kafka = pytest.importorskip("confluent_kafka")  # inferq[fast]; the dev install has it
KafkaError = confluent_kafka.KafkaError


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        (KafkaError.REBALANCE_IN_PROGRESS, kerr.RebalanceInProgressError),
        (KafkaError.ILLEGAL_GENERATION, kerr.CommitFailedError),
        (KafkaError.UNKNOWN_MEMBER_ID, kerr.CommitFailedError),
        (KafkaError.FENCED_INSTANCE_ID, kerr.CommitFailedError),
        (KafkaError._ASSIGNMENT_LOST, kerr.CommitFailedError),
        (KafkaError.MSG_SIZE_TOO_LARGE, kerr.MessageSizeTooLargeError),
        (KafkaError.RECORD_LIST_TOO_LARGE, kerr.RecordListTooLargeError),
        (KafkaError.INVALID_RECORD, kerr.InvalidRecordError),
        (KafkaError.TOPIC_EXCEPTION, kerr.InvalidTopicError),
        (KafkaError._MSG_TIMED_OUT, kerr.KafkaTimeoutError),
        (KafkaError._TRANSPORT, kerr.KafkaError),
    ],
)
def test_librdkafka_errors_are_the_kafka_python_classes_the_intake_catches(code, expected):
    error = as_kafka_error(KafkaError(code))
    assert type(error) is expected
    assert isinstance(error, kerr.KafkaError)  # so RETRYABLE (workers/intake/refuse.py) catches the rest


def _producer() -> SimpleNamespace:
    hooks: list[int] = []
    return SimpleNamespace(
        delivered=threading.Condition(), hooks=hooks, _after_deliveries=lambda: hooks.append(1)
    )


def _message(partition: int = 3, offset: int = 42) -> SimpleNamespace:
    return SimpleNamespace(
        topic=lambda: "t", partition=lambda: partition, offset=lambda: offset, timestamp=lambda: (1, 7)
    )


def test_a_delivered_record_resolves_its_future_and_calls_back_before_and_after():
    sent = SentRecord(_producer())
    seen: list[RecordMetadata] = []
    sent.add_callback(seen.append)
    assert not sent.is_done()
    sent._delivered(None, _message())
    assert sent.get(timeout=0) == RecordMetadata("t", 3, 42, 7)
    sent.add_callback(seen.append)  # already delivered: called at once
    assert [m.partition for m in seen] == [3, 3]


def test_a_refused_record_raises_its_error_and_calls_nobody_back():
    sent = SentRecord(_producer())
    seen: list[RecordMetadata] = []
    sent.add_callback(seen.append)
    sent._delivered(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
    with pytest.raises(kerr.MessageSizeTooLargeError):
        sent.get(timeout=0)
    assert seen == []


def test_an_unconfirmed_record_times_out_as_kafka_python_does():
    sent = SentRecord(_producer())
    with pytest.raises(kerr.KafkaTimeoutError):
        sent.get(timeout=0.01)


def test_a_delivery_on_another_thread_wakes_the_waiter():
    sent = SentRecord(_producer())
    threading.Timer(0.02, sent._delivered, (None, _message(offset=9))).start()
    assert sent.get(timeout=5).offset == 9


def test_a_callback_added_after_the_delivery_runs_the_after_deliveries_hook_again():
    """The client rings the doorbell in the hook that follows a round of deliveries; a record
    delivered before its callback was added must not wait for another round to be announced."""
    producer = _producer()
    sent = SentRecord(producer)
    pending: list[int] = []
    sent.add_callback(lambda m: pending.append(m.partition))
    sent._delivered(None, _message())
    assert pending == [3] and producer.hooks == []  # in a round: the producer's thread runs the hook
    sent.add_callback(lambda m: pending.append(m.partition))  # too late for that round
    assert pending == [3, 3] and producer.hooks == [1]
