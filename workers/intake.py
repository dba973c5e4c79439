"""Kafka intake: a consumer group that validates requests and hands them to Celery.

For each poll: validate every record; record the valid ones as ``queued`` in Redis; send them to
their model's Celery queue, many per message; publish the invalid ones to the dead-letter topic
(and answer them ``failed`` where they carry a request id); only then commit the offsets. A crash
anywhere before the commit replays the records, and the result store makes the replay harmless.

Run it with ``inferq-intake`` (or ``python -m workers.intake``); SIGTERM finishes the current poll,
commits and exits.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from celery import Celery
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord

from ops.logship.ecs import configure_logging, mask_text, stop_logging
from ops.metrics.instruments import ADMITTED, DEAD_LETTERS
from ops.observe import observe_store
from schemas.errors import DuplicateRequestId, InferqError, InvalidRequest
from schemas.messages import DeadLetter, InferenceRequest, InferenceResult, ResultStatus, Timings, now_ms
from schemas.naming import deadletter_topic, model_queue, requests_topic
from schemas.settings import Settings, get_settings
from workers.celery_app import CELERY_PRIORITY, TASK_INFER, make_app
from workers.result_store import Admission, ResultStore, queued_result, request_digest
from workers.validation import parse_request, salvage_request_id

log = logging.getLogger(__name__)


class Intake:
    """One intake replica; several share the work through the consumer group."""

    def __init__(
        self,
        settings: Settings,
        consumer: KafkaConsumer,
        producer: KafkaProducer,
        store: ResultStore,
        celery: Celery,
    ) -> None:
        self.s = settings
        self.consumer = consumer
        self.producer = producer
        self.store = store
        self.celery = celery

    @classmethod
    def from_settings(cls, settings: Settings) -> Intake:
        consumer = KafkaConsumer(
            requests_topic(settings),
            bootstrap_servers=settings.kafka_bootstrap_servers,
            group_id=settings.kafka_group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=settings.kafka_max_poll_records,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            fetch_max_wait_ms=settings.kafka_poll_timeout_ms,
            max_partition_fetch_bytes=max(1_048_576, settings.kafka_max_message_bytes * 2),
        )
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", linger_ms=2)
        store = observe_store(ResultStore.from_settings(settings))
        return cls(settings, consumer, producer, store, make_app(settings))

    def run(self, stop: threading.Event) -> None:
        """Poll, hand off, commit, until ``stop`` is set; then close (every handled poll is committed).

        After an empty poll the loop pauses before the next: some brokers (the local one among
        them) answer an empty fetch at once instead of holding it for ``fetch_max_wait_ms``, and
        kafka-python would spin a core on them, stealing it from the model. The pause doubles from
        1 ms up to ``kafka_idle_poll_max_ms`` (the most a request arriving in steady traffic
        waits), and after ``kafka_quiet_after_ms`` without records stretches to
        ``kafka_quiet_poll_ms`` (the most the first request after a quiet spell waits).
        """
        s = self.s
        pause_s, quiet_since = 0.0, time.monotonic()
        try:
            while not stop.is_set():
                if self.step():
                    pause_s, quiet_since = 0.0, time.monotonic()
                    continue
                quiet = (time.monotonic() - quiet_since) * 1000.0 >= s.kafka_quiet_after_ms
                cap_ms = s.kafka_quiet_poll_ms if quiet else s.kafka_idle_poll_max_ms
                pause_s = min(cap_ms / 1000.0, max(0.001, pause_s * 2))
                stop.wait(pause_s)
        finally:
            self.producer.flush()
            self.consumer.close(autocommit=False)
            self.producer.close()

    def step(self) -> int:
        """One poll → hand-off → commit cycle; returns the number of records handled."""
        # Joining the group takes several round trips inside poll: give it time until assigned
        # (kafka-python restarts a join cut short). Once assigned, wait only briefly for the
        # broker's answer, so a fetch sent by this poll is harvested by it, not by the next one.
        timeout_ms = self.s.kafka_poll_wait_ms if self.consumer.assignment() else self.s.kafka_poll_timeout_ms
        polled = self.consumer.poll(timeout_ms=timeout_ms, max_records=self.s.kafka_max_poll_records)
        records = [r for batch in polled.values() for r in batch]
        if records:
            self.handle(records)
            self.consumer.commit()
        return len(records)

    def handle(self, records: Sequence[ConsumerRecord]) -> None:
        received = now_ms()
        accepted: list[tuple[ConsumerRecord, InferenceRequest, dict[str, Any]]] = []
        for rec in records:
            try:
                request = parse_request(rec.value, self.s)
            except InvalidRequest as e:
                self.reject(rec, e, received, answer=True)
                continue
            accepted.append((rec, request, {"published_ms": float(rec.timestamp), "received_ms": received}))
        self.hand_off(accepted)
        self.producer.flush()

    def hand_off(self, accepted: list[tuple[ConsumerRecord, InferenceRequest, dict[str, Any]]]) -> None:
        """Admit to the result store, then send NEW and PENDING requests to Celery."""
        if not accepted:
            return
        queued = now_ms()
        for _, _, t in accepted:
            t["queued_ms"] = queued
        verdicts = self.store.admit([(request_digest(req), queued_result(req, t)) for _, req, t in accepted])
        by_queue: dict[tuple[str, int], list[dict[str, Any]]] = {}
        for (rec, req, t), verdict in zip(accepted, verdicts, strict=True):
            if verdict is Admission.NEW:
                ADMITTED.labels(req.model).inc()
                if self.s.log_inputs:  # opt-in, and masked: never the text itself
                    log.info(
                        "received %s",
                        req.request_id,
                        extra={
                            "event.dataset": "inferq.intake",
                            "inferq.stage": "received",
                            "inferq.request_id": req.request_id,
                            "inferq.input_preview": mask_text(req.texts()[0]),
                        },
                    )
            if verdict in (Admission.NEW, Admission.PENDING):
                item = {"request": req.model_dump(mode="json"), "timings": t}
                key = (model_queue(self.s, req.model), CELERY_PRIORITY[req.priority])
                by_queue.setdefault(key, []).append(item)
            elif verdict is Admission.CONFLICT:
                self.reject(rec, DuplicateRequestId(req.request_id), t["received_ms"], answer=False)
        n = self.s.transport_batch_size
        for (queue, priority), items in sorted(by_queue.items(), key=lambda kv: kv[0][1]):
            for i in range(0, len(items), n):
                self.celery.send_task(TASK_INFER, args=[items[i : i + n]], queue=queue, priority=priority)

    def reject(self, rec: ConsumerRecord, error: InferqError, received: float, *, answer: bool) -> None:
        """Dead-letter a record; with ``answer``, also write a ``failed`` result for its id."""
        rid = salvage_request_id(rec.value)
        DEAD_LETTERS.labels(error.code.value).inc()
        log.warning(
            "dead-lettering %s[%d]@%d: %s",
            rec.topic,
            rec.partition,
            rec.offset,
            error.message,
            extra={
                "event.dataset": "inferq.deadletter",
                "event.action": "dead_letter",
                "event.outcome": "failure",
                "inferq.stage": "intake",
                "inferq.request_id": rid,
                "inferq.error_code": error.code.value,
                "inferq.source.topic": rec.topic,
                "inferq.source.partition": rec.partition,
                "inferq.source.offset": rec.offset,
            },
        )
        if answer and rid:
            failed = InferenceResult(
                request_id=rid,
                status=ResultStatus.FAILED,
                error=error.info(),
                timings=Timings(published_ms=float(rec.timestamp), received_ms=received, done_ms=now_ms()),
            )
            self.store.advance([failed], only_if_absent=True)
        letter = DeadLetter(
            error=error.info(),
            request_id=rid,
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            key=rec.key.decode("utf-8", "replace") if rec.key else None,
            payload=(rec.value or b"").decode("utf-8", "replace"),
            dead_lettered_at=datetime.now(timezone.utc),
        )
        self.producer.send(
            deadletter_topic(self.s),
            key=rec.key,
            value=letter.model_dump_json().encode(),
            headers=[("error_code", error.code.value.encode())],
        )


def yield_cpu(policy: str) -> bool:
    """With ``idle``, run this process (and the threads it starts later) at SCHED_IDLE.

    On a CPU box the model's forward pass uses every core; the intake's frequent short polls
    would preempt one of its threads and stall the whole pass at the next barrier (measured:
    batch-1 forward 27 → 46 ms beside a process busy 2.4 ms every 7.4 ms; unchanged at SCHED_IDLE).
    Idle-class work still runs whenever a core is free, which is when a forward pass ends.
    Returns whether the policy was applied (not on non-Linux systems).
    """
    if policy != "idle" or not hasattr(os, "sched_setscheduler"):
        return False
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    return True


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "intake")
    if yield_cpu(settings.intake_cpu_policy):
        log.info("intake runs at SCHED_IDLE (INFERQ_INTAKE_CPU_POLICY=idle)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    intake = Intake.from_settings(settings)
    log.info("intake consuming %s as group %s", requests_topic(settings), settings.kafka_group_id)
    intake.run(stop)
    log.info("intake stopped")
    stop_logging()


if __name__ == "__main__":
    main()

__all__ = ["Intake", "main"]
