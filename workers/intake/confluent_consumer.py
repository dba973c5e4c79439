"""kafka-python's ``KafkaConsumer`` over confluent-kafka (librdkafka): the intake's consumer and
read-backs under ``INFERQ_KAFKA_CLIENT=confluent`` (:func:`workers.intake.consumer.new_consumer`);
how librdkafka's differences are bridged is told in :mod:`schemas.confluent`."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from kafka import errors as kerr
from kafka.structs import OffsetAndMetadata, TopicPartition

from schemas.confluent import METADATA_TIMEOUT_S, as_kafka_error

log = logging.getLogger(__name__)

_NO_OFFSET = -168  # _NO_OFFSET: a commit with nothing to commit


class Record(NamedTuple):
    """A consumed record (the fields of kafka-python's ``ConsumerRecord`` that inferq reads)."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class ConfluentConsumer:
    """kafka-python's ``KafkaConsumer`` (the part inferq uses) over librdkafka.

    With ``topics`` it subscribes as a member of ``group.id`` (the intake); without, it is a reader
    that is assigned partitions (:meth:`assign`) and fetches only inside :meth:`poll`.
    """

    def __init__(self, config: Mapping[str, Any], topics: list[str] | None = None) -> None:
        from confluent_kafka import Consumer

        self._c = Consumer({**config, "enable.auto.commit": False, "enable.auto.offset.store": False})
        self._reader = not topics
        self._positions: dict[TopicPartition, int] = {}  # next record to hand out, per partition
        self._paused: set[TopicPartition] = set()  # paused by the caller (backpressure)
        self._idle: set[TopicPartition] = set()  # paused by idle()
        self._corrupt: Exception | None = None  # raised by the next poll
        if topics:
            self._c.subscribe(
                topics, on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
            )

    # librdkafka's rebalance callbacks (inside poll): positions of partitions gone are forgotten
    def _assigned(self, _consumer: Any, partitions: list[Any]) -> None:
        mine = {TopicPartition(p.topic, p.partition) for p in partitions}
        self._positions = {tp: o for tp, o in self._positions.items() if tp in mine}
        self._paused.clear()  # a new assignment fetches every partition (kafka-python's does too)
        self._idle.clear()

    def _revoked(self, _consumer: Any, partitions: list[Any]) -> None:
        for p in partitions:
            tp = TopicPartition(p.topic, p.partition)
            self._positions.pop(tp, None)
            self._paused.discard(tp)
            self._idle.discard(tp)

    @staticmethod
    def _tp(tp: TopicPartition, offset: int | None = None) -> Any:
        from confluent_kafka import TopicPartition as CTP

        return CTP(tp.topic, tp.partition) if offset is None else CTP(tp.topic, tp.partition, offset)

    def assignment(self) -> set[TopicPartition]:
        return {TopicPartition(p.topic, p.partition) for p in self._c.assignment()}

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        """A reader's partitions (kept paused between polls: see the module docstring)."""
        parts = list(partitions)
        self._positions = {tp: o for tp, o in self._positions.items() if tp in parts}
        self._c.assign([self._tp(tp) for tp in parts])
        self._c.pause([self._tp(tp) for tp in parts])

    # -- reading ----------------------------------------------------------------------------------
    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        """Records by partition, as soon as one is there (then what else is queued), or {} after
        ``timeout_ms``."""
        if self._corrupt is not None:
            corrupt, self._corrupt = self._corrupt, None
            raise corrupt
        if self._reader:
            return self._read(timeout_ms, max_records)
        return self._take(timeout_ms / 1000.0, max_records or 500)

    def _read(self, timeout_ms: int, max_records: int | None) -> dict[TopicPartition, list[Record]]:
        parts = [tp for tp in self.assignment() if tp not in self._paused]
        self._restart(parts)  # from where this reader stands, whatever librdkafka had fetched before
        try:
            return self._take(timeout_ms / 1000.0, max_records or 500)
        finally:
            self._c.pause([self._tp(tp) for tp in parts])

    def _take(self, timeout_s: float, max_records: int) -> dict[TopicPartition, list[Record]]:
        from confluent_kafka import KafkaException

        try:
            first = self._c.poll(timeout_s)
            if first is None:
                return self._raise_corrupt({})
            messages: list[Any] = (
                [first, *self._c.consume(max_records - 1, 0)] if max_records > 1 else [first]
            )
        except KafkaException as e:
            raise as_kafka_error(e.args[0]) from None
        except Exception as e:  # a fetched record librdkafka's binding cannot make (a header name not UTF-8)
            # the whole batch is lost with it: every partition goes back to what was handed out
            for tp in self.assignment() - self._paused - self._idle:
                self._c.seek(self._tp(tp, self.position(tp)))
            raise kerr.CorruptRecordError(f"a fetched record cannot be read: {e!r}") from None
        out: dict[TopicPartition, list[Record]] = {}
        stopped: set[TopicPartition] = set()  # a corrupt record, or paused meanwhile: nothing after it
        for m in messages:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise as_kafka_error(err)
                log.info("Kafka client: %s", err.str())  # librdkafka retries on its own
                continue
            tp = TopicPartition(m.topic(), m.partition())
            if tp in stopped:
                continue
            if tp in self._paused or tp in self._idle:  # fetched before the pause: read again later
                self.seek(tp, m.offset())
                stopped.add(tp)
                continue
            offset = m.offset()
            try:  # a header name that is not UTF-8: the binding returns its headers with an error
                # pending, raised (SystemError) by whichever call comes next: this block
                headers = m.headers() or []
                record = Record(tp.topic, tp.partition, offset, m.timestamp()[1], m.key(), m.value(), headers)
            except Exception as e:
                self.seek(tp, offset)
                stopped.add(tp)
                self._corrupt = kerr.CorruptRecordError(f"record {tp.topic}[{tp.partition}]@{offset}: {e!r}")
                continue
            out.setdefault(tp, []).append(record)
        for tp, records in out.items():
            if tp not in stopped:
                self._positions[tp] = records[-1].offset + 1
        return self._raise_corrupt(out)

    def _raise_corrupt(self, out: dict[TopicPartition, list[Record]]) -> dict[TopicPartition, list[Record]]:
        if not out and self._corrupt is not None:
            corrupt, self._corrupt = self._corrupt, None
            raise corrupt
        return out

    def seek(self, tp: TopicPartition, offset: int) -> None:
        from confluent_kafka import KafkaException

        self._positions[tp] = offset
        try:
            self._c.seek(self._tp(tp, offset))
        except KafkaException as e:  # not fetching yet (just assigned): start it there instead
            if self._reader:
                self._c.assign([self._tp(p, self._positions.get(p)) for p in self.assignment()])
                self._c.pause([self._tp(p) for p in self.assignment()])
                return
            raise as_kafka_error(e.args[0]) from None

    def position(self, tp: TopicPartition) -> int:
        """The next offset this consumer hands out: consumed or sought here, else the committed
        offset, else the start of the log (``auto.offset.reset=earliest``)."""
        if tp not in self._positions:
            committed = self.committed(tp) if not self._reader else None
            self._positions[tp] = committed if committed is not None else self.beginning_offsets([tp])[tp]
        return self._positions[tp]

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(partitions)
        if partitions:
            self._c.pause([self._tp(tp) for tp in partitions])

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)
        self._restart([tp for tp in partitions if tp not in self._idle])

    def idle(self) -> None:
        """The caller waits for work: stop fetching (see the module docstring)."""
        if self._reader or self._idle:
            return
        self._idle = self.assignment() - self._paused
        if self._idle:
            self._c.pause([self._tp(tp) for tp in self._idle])

    def rejoin(self, timeout_ms: int) -> bool:
        """librdkafka finishes a rebalance on its own thread: nothing to do here."""
        return True

    def wake(self) -> None:
        """Fetch again, from the positions held here, before the next poll."""
        idle, self._idle = self._idle, set()
        self._restart([tp for tp in idle if tp not in self._paused])

    def _restart(self, partitions: list[TopicPartition]) -> None:
        """Resume fetching ``partitions`` at once, from this consumer's positions: librdkafka starts
        a resumed partition's next fetch only after a while (0.4-0.7 s measured) unless it is sought
        after the resume."""
        if not partitions:
            return
        self._c.resume([self._tp(tp) for tp in partitions])
        for tp in partitions:
            self._c.seek(self._tp(tp, self.position(tp)))

    # -- offsets ----------------------------------------------------------------------------------
    def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata] | None = None) -> None:
        """Commit ``offsets``, or else the positions of the assigned partitions; synchronous."""
        from confluent_kafka import KafkaException

        if offsets is None:
            mine = self.assignment()
            todo = {tp: o for tp, o in self._positions.items() if tp in mine}
        else:
            todo = {tp: om.offset for tp, om in offsets.items()}
        if not todo:
            return
        try:
            self._c.commit(offsets=[self._tp(tp, o) for tp, o in todo.items()], asynchronous=False)
        except KafkaException as e:
            if e.args[0].code() != _NO_OFFSET:
                raise as_kafka_error(e.args[0]) from None

    def committed(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        from confluent_kafka import KafkaException

        timeout = METADATA_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000.0
        try:
            (got,) = self._c.committed([self._tp(tp)], timeout=timeout)
        except KafkaException as e:
            raise as_kafka_error(e.args[0]) from None
        return got.offset if got.offset >= 0 else None

    def _watermarks(
        self, partitions: Iterable[TopicPartition], timeout_ms: int | None
    ) -> dict[TopicPartition, tuple[int, int]]:
        from confluent_kafka import KafkaException

        timeout = METADATA_TIMEOUT_S if timeout_ms is None else timeout_ms / 1000.0
        try:
            return {
                tp: self._c.get_watermark_offsets(self._tp(tp), timeout=timeout, cached=False)
                for tp in partitions
            }
        except KafkaException as e:
            raise as_kafka_error(e.args[0]) from None

    def end_offsets(
        self, partitions: Iterable[TopicPartition], timeout_ms: int | None = None
    ) -> dict[TopicPartition, int]:
        return {tp: high for tp, (_, high) in self._watermarks(partitions, timeout_ms).items()}

    def beginning_offsets(
        self, partitions: Iterable[TopicPartition], timeout_ms: int | None = None
    ) -> dict[TopicPartition, int]:
        return {tp: low for tp, (low, _) in self._watermarks(partitions, timeout_ms).items()}

    def partitions_for_topic(self, topic: str) -> set[int] | None:
        from confluent_kafka import KafkaException

        try:
            meta = self._c.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        except KafkaException as e:
            raise as_kafka_error(e.args[0]) from None
        return set(meta.partitions) if meta is not None and meta.error is None else None

    def close(self, autocommit: bool = False) -> None:
        """Leave (a static member does not: :func:`workers.intake.consumer.leave_group`); never commits."""
        self._c.close()
