"""Requests the API admitted whose Kafka record the broker lost: found and published again.

``POST /v1/requests`` records a request ``queued`` and keeps its wire JSON (:meth:`ResultStore.expect
<workers.store.store.ResultStore.expect>`) before publishing it with the ``inferq-admitted``
header; the intake that reads such a record drops that copy before it commits
(:meth:`~workers.store.store.ResultStore.seen`). A copy left ``republish_unseen_after_s`` later
belongs to a record no intake read: still in a backlog, or lost by the broker (an unclean restart
truncates the log after the API was told the record was written). The intake that owns the
record's partition (the key is the request id: Kafka's default partitioner) notes that
partition's end offset when it first finds the copy; once it has committed past that offset and
the copy is still there, the record was lost, and it is published again. Without this the request
stays ``queued`` for ever.
"""

from __future__ import annotations

import json
import logging
import time

from kafka import KafkaConsumer, KafkaProducer
from kafka.partitioner.default import murmur2
from kafka.structs import TopicPartition

from schemas.naming import ADMITTED_HEADER, requests_topic
from schemas.observer import Observer
from schemas.settings import Settings
from schemas.tenancy import parse_keys, signed_headers
from schemas.validation import readable_request_id
from workers.store.store import ResultStore

log = logging.getLogger(__name__)

SWEEP_S = 5.0  # while idle, how often the intake looks for lost records
SEND_WAIT_S = 30.0


class LostRecords:
    """One intake's sweep for the API's records the broker lost (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: ResultStore,
        producer: KafkaProducer,
        observer: Observer | None = None,
    ) -> None:
        self.s = settings
        self.observer = observer or Observer()
        self.store = store
        self.producer = producer
        # result key → the record's partition and that partition's end offset when first found
        self.marks: dict[str, tuple[TopicPartition, int]] = {}
        self._next = 0.0
        # under INFERQ_KAFKA_TENANT_AUTH=signed a copy is signed as its tenant, like the API's record
        signed = settings.kafka_tenant_auth == "signed"
        self._keys = parse_keys(settings.kafka_tenant_keys.get_secret_value()) if signed else {}

    def sweep(self, consumer: KafkaConsumer) -> int:
        """Publish again the requests the API admitted and published that no intake has read
        ``republish_unseen_after_s`` later, once this intake (owning their partition) has committed
        past that partition's end offset as it stood when they were first found unread: the broker
        lost them (an unclean restart). Records merely waiting in a backlog are never past it.
        The copies carry the API's header, so reading them clears the hand-off; the admission
        dedups them (the request is already ``queued``). Returns how many were published."""
        now = time.monotonic()
        if now < self._next:
            return 0
        self._next = now + min(SWEEP_S, self.s.republish_unseen_after_s / 2)
        try:
            return self._republish(consumer, self.store.unseen(self.s.republish_unseen_after_s))
        except Exception:  # housekeeping: retried at the next sweep
            log.warning("looking for lost hand-offs failed", exc_info=True)
            return 0

    def _republish(self, consumer: KafkaConsumer, found: list[tuple[str, str]]) -> int:
        live = {key for key, _ in found}
        self.marks = {k: v for k, v in self.marks.items() if k in live}
        topic = requests_topic(self.s)
        partitions = sorted(consumer.partitions_for_topic(topic) or []) if found else []
        mine = consumer.assignment()
        todo: list[tuple[str, str, str, TopicPartition, str | None]] = []
        for key, wire in found:
            data = json.loads(wire)
            rid = readable_request_id(data)
            if rid is None or not partitions:
                continue
            tp = TopicPartition(topic, partitions[(murmur2(rid.encode()) & 0x7FFFFFFF) % len(partitions)])
            if tp in mine:
                tenant = data.get("tenant")
                todo.append((key, wire, rid, tp, tenant if isinstance(tenant, str) else None))
        if not todo:
            return 0
        ends = consumer.end_offsets(sorted({tp for _, _, _, tp, _ in todo}), timeout_ms=5_000)
        committed: dict[TopicPartition, int] = {}
        sent = 0
        for key, wire, rid, tp, tenant in todo:
            mark = self.marks.get(key)
            if mark is None or mark[0] != tp:
                self.marks[key] = (tp, ends[tp])
                continue
            if tp not in committed:
                committed[tp] = consumer.committed(tp, timeout_ms=5_000) or 0
            if committed[tp] < mark[1]:
                continue  # it may still wait in the backlog
            value = wire.encode()
            headers = [(ADMITTED_HEADER, b"1")]
            if tenant is not None and tenant in self._keys:
                headers += signed_headers(tenant, self._keys[tenant], value)
            self.producer.send(topic, key=rid.encode(), value=value, headers=headers).get(timeout=SEND_WAIT_S)
            self.store.republished(key)
            del self.marks[key]
            sent += 1
        if sent:
            self.observer.redelivered("republished", sent)
            log.warning(
                "published %d requests again: admitted by the API, never read from Kafka (lost)",
                sent,
                extra={"event.dataset": "inferq.intake", "inferq.stage": "republished"},
            )
        return sent
