"""kafka-python's interface over confluent-kafka (librdkafka): the producer that
``INFERQ_KAFKA_CLIENT=confluent`` selects (:func:`schemas.connections.kafka_producer`), and the
error mapping its consumer shares (:mod:`workers.intake.confluent_consumer`).

The rest of the project speaks kafka-python's API (``send(...).get()``, ``poll() -> {partition:
[records]}``, ``seek``, ``pause``, ``commit``, ``position``, kafka-python's error classes), so these
classes offer exactly the part of it that inferq uses, and nothing that calls them changes with
the client. What librdkafka does differently, and how it is bridged:

- It sends and fetches from its own threads. A delivery is reported only while someone serves the
  producer's events: a daemon thread does (:class:`ConfluentProducer`), so futures resolve and
  callbacks (the doorbell) run without the caller polling.
- A consumer fetches in the background all the time, and a broker that answers an empty fetch at
  once (the local noida-db does) makes it spin a core while idle. Its ``idle()`` pauses fetching
  while the intake waits for work and ``wake()`` resumes it at the positions the intake holds (a
  resumed partition is sought too: librdkafka alone fetches it again only 0.4-0.7 s later); a
  consumer without a group (a reader) fetches only inside ``poll()``.
- Positions are the ones this process consumed or sought (``enable.auto.offset.store`` off), so
  ``commit()`` commits exactly what was handed off, as kafka-python's does.
- A record whose header names cannot be decoded is raised as kafka-python's
  ``CorruptRecordError`` at the partition's position (the records before it in the same poll are
  returned first), so the intake's search for unreadable records finds and skips it as before.

confluent-kafka is an optional dependency (``inferq[fast]``); it is imported only when one of these
is made.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from kafka import errors as kerr

log = logging.getLogger(__name__)

EVENT_WAIT_S = 0.05  # the producer's event thread waits this long per round for deliveries
QUEUE_FULL_WAIT_S = 0.01  # a full send queue: events are served this long before the send is tried again
METADATA_TIMEOUT_S = 5.0

# librdkafka's error codes (confluent_kafka.KafkaError) and kafka-python's class for each
_REBALANCING = {27: kerr.RebalanceInProgressError}  # REBALANCE_IN_PROGRESS
_COMMIT_REFUSED = {
    22,
    25,
    82,
    -142,
}  # ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID, _ASSIGNMENT_LOST
_PERMANENT = {
    10: kerr.MessageSizeTooLargeError,  # MSG_SIZE_TOO_LARGE (local and broker)
    18: kerr.RecordListTooLargeError,  # RECORD_LIST_TOO_LARGE
    87: kerr.InvalidRecordError,  # INVALID_RECORD
    17: kerr.InvalidTopicError,  # INVALID_TOPIC_EXCEPTION
}
_TIMED_OUT = {-192, -185, 7}  # _MSG_TIMED_OUT, _TIMED_OUT, REQUEST_TIMED_OUT


def as_kafka_error(err: Any) -> Exception:
    """kafka-python's exception for a confluent-kafka ``KafkaError`` (the project catches those)."""
    code, text = err.code(), f"{err.name()}: {err.str()}"
    if code in _REBALANCING:
        return _REBALANCING[code](text)
    if code in _COMMIT_REFUSED:
        return kerr.CommitFailedError(text)
    if code in _PERMANENT:
        return _PERMANENT[code](text)
    if code in _TIMED_OUT:
        return kerr.KafkaTimeoutError(text)
    return kerr.KafkaError(text)


# -- producing ------------------------------------------------------------------------------------
class RecordMetadata(NamedTuple):
    """Where the broker put a record (the fields of kafka-python's that inferq reads)."""

    topic: str
    partition: int
    offset: int
    timestamp: int


class SentRecord:
    """kafka-python's ``FutureRecordMetadata`` for one record: ``get``, ``add_callback``."""

    __slots__ = ("_callbacks", "_done", "_error", "_metadata", "_producer")

    def __init__(self, producer: ConfluentProducer) -> None:
        self._producer = producer
        self._done = False
        self._error: Exception | None = None
        self._metadata: RecordMetadata | None = None
        self._callbacks: list[Callable[[RecordMetadata], Any]] = []

    def _delivered(self, err: Any, msg: Any) -> None:
        """librdkafka's delivery report (on the thread serving the producer's events)."""
        if err is not None:
            self._error = as_kafka_error(err)
        else:
            self._metadata = RecordMetadata(msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1])
        with self._producer.delivered:
            self._done = True
            callbacks, self._callbacks = self._callbacks, []
            self._producer.delivered.notify_all()
        if self._metadata is not None:
            for callback in callbacks:
                _call(callback, self._metadata)

    def add_callback(self, callback: Callable[[RecordMetadata], Any]) -> SentRecord:
        """Call ``callback(metadata)`` once the broker has the record (at once if it has)."""
        with self._producer.delivered:
            if not self._done:
                self._callbacks.append(callback)
                return self
        if self._metadata is not None:
            _call(callback, self._metadata)
            # delivered before the callback was added (the caller lost the CPU between send and
            # add_callback): the round's after-deliveries hook ran without what it queued (the
            # client's doorbell ring), so it runs again, or the ring waits for another delivery
            self._producer._after_deliveries()
        return self

    def is_done(self) -> bool:
        return self._done

    def get(self, timeout: float | None = None) -> RecordMetadata:
        """The record's metadata once the broker has it; raises what refused it (kafka-python's
        classes), or ``KafkaTimeoutError`` after ``timeout`` seconds."""
        with self._producer.delivered:
            if not self._producer.delivered.wait_for(lambda: self._done, timeout):
                raise kerr.KafkaTimeoutError(f"the broker did not confirm the record within {timeout} s")
        if self._error is not None:
            raise self._error
        assert self._metadata is not None
        return self._metadata


def _call(callback: Callable[[RecordMetadata], Any], metadata: RecordMetadata) -> None:
    try:
        callback(metadata)
    except Exception:  # a callback's failure is its own (kafka-python logs and goes on, too)
        log.exception("a delivery callback failed")


class ConfluentProducer:
    """kafka-python's ``KafkaProducer`` (``send``, ``flush``, ``close``) over librdkafka."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        from confluent_kafka import Producer

        self._p = Producer(dict(config))
        self.delivered = threading.Condition()
        # called after each round that delivered records, once their callbacks ran (the client
        # rings the doorbells of a round's partitions there: one ring per partition, not per record)
        self.after_deliveries: Callable[[], None] | None = None
        self._closed = threading.Event()
        self._events = threading.Thread(target=self._serve, name="kafka-producer-events", daemon=True)
        self._events.start()

    def _serve(self) -> None:
        while not self._closed.is_set():
            if self._p.poll(EVENT_WAIT_S):
                self._after_deliveries()

    def _after_deliveries(self) -> None:
        if self.after_deliveries is not None:
            try:
                self.after_deliveries()
            except Exception:  # the hook's failure is its own; deliveries go on
                log.exception("the after-deliveries hook failed")

    def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] | None = None,
        partition: int | None = None,
    ) -> SentRecord:
        """Queue one record; a refusal made before sending (its size) is raised here, as kafka-python does."""
        from confluent_kafka import KafkaException

        sent = SentRecord(self)
        opts: dict[str, Any] = {"on_delivery": sent._delivered}
        if headers:
            opts["headers"] = list(headers)
        if partition is not None:
            opts["partition"] = partition
        while True:
            try:
                self._p.produce(topic, value=value, key=key, **opts)
                return sent
            except BufferError:  # the send queue is full: let the broker take some first
                self._p.poll(QUEUE_FULL_WAIT_S)
            except KafkaException as e:
                raise as_kafka_error(e.args[0]) from None

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued record is delivered (or ``timeout`` seconds)."""
        left = self._p.flush(-1 if timeout is None else timeout)
        self._after_deliveries()  # flush serves delivery reports on this thread too
        if left and timeout is not None:
            raise kerr.KafkaTimeoutError(f"{left} records not delivered after {timeout} s")

    def close(self, timeout: float | None = None) -> None:
        try:
            self._p.flush(30.0 if timeout is None else timeout)
        finally:
            self._closed.set()
            self._events.join(timeout=1.0)
