"""Kafka intake: a consumer group that validates requests and hands them to Celery.

For each poll: validate every record; record the valid ones as ``queued`` in Redis; send them to
their model's Celery queue, many per message; publish the invalid ones to the dead-letter topic
(and answer them ``failed`` where they carry a request id); only then commit the offsets. A crash
anywhere before the commit replays the records, and the result store makes the replay harmless.
A request whose deadline passed while it waited in Kafka is answered ``expired`` here.

A model with ``INFERQ_BACKPRESSURE_MAX_INFLIGHT`` requests in flight pauses the partitions while
the intake keeps polling, and still answers the expired and invalid records at their head
(:mod:`workers.intake.backpressure`). Transient failures (Redis or the Celery
broker unreachable past the clients' own retries, Kafka errors) rewind the poll and retry it with
backoff; nothing is committed until a poll is fully handed off, its dead letters included (the
intake waits until the broker has them).

No record can stop the intake. Every failure to decode or validate one is a typed dead letter
(:mod:`schemas.validation`, :mod:`schemas.results`: a letter always fits the producer's limit).
Any other exception while handling a poll (a bug, a type nobody expected) rewinds it and gives each
of its records a strike; a record with ``MAX_STRIKES`` strikes is then handled alone, and
dead-lettered ``internal_error`` (with the exception type) if it fails again, so a poison record
costs a few retries, never the partition. Nothing a record does ends the process.

Run it with ``inferq-intake`` (or ``python -m workers.intake``); SIGTERM finishes the current poll,
commits and exits.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, KafkaError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition
from kombu.exceptions import OperationalError

from schemas import results
from schemas.catalog import CATALOG
from schemas.connections import kafka_client_options, kafka_options
from schemas.errors import (
    DeadlineExpired,
    DuplicateRequestId,
    ErrorCode,
    Forbidden,
    InferqError,
    InvalidRequest,
    ModelUnavailable,
    Unauthorized,
)
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus, Timings, now_ms
from schemas.naming import ADMITTED_HEADER, model_queue, requests_topic, scoped_id
from schemas.observer import Observer
from schemas.settings import Settings, get_settings
from schemas.tenancy import TenantAuth
from schemas.validation import parse_request, salvage
from schemas.work import Handoff, Source, WorkItem
from workers.intake import unreadable
from workers.intake.backpressure import Backpressure, PartitionHold
from workers.intake.consumer import leave_group, new_consumer
from workers.intake.cpu import yield_cpu
from workers.intake.lost import LostRecords
from workers.intake.retention import retention_warning
from workers.intake.stall import StallWatch
from workers.intake.trim import CommittedTrim
from workers.intake.truncation import TruncationWatch
from workers.store.doorbell import Doorbell
from workers.store.presence import ServedModels
from workers.store.store import (
    TRANSIENT_ERRORS,
    Admission,
    ResultStore,
    bytes_digest,
    quota_error,
    request_digest,
)
from workers.telemetry.logs import configure_logging, mask_text, stop_logging
from workers.telemetry.observe import Telemetry
from workers.transport import letters
from workers.transport.app import CELERY_PRIORITY, TASK_INFER, make_app

log = logging.getLogger(__name__)

# failures that pass: the poll is rewound and tried again after a pause
RETRYABLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, OperationalError, KafkaError)
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 10.0
# after a ring, polls that may come back empty before the intake waits again: the first harvests
# the fetch kafka-python sent before the record arrived (the local broker answers it at once,
# empty); without them a ringing record waited a whole kafka_quiet_poll_ms, 1 in 100 at low load
RUNG_POLLS = 2
REBALANCING: tuple[type[Exception], ...] = (CommitFailedError, RebalanceInProgressError)
# polls a record may fail (with anything but a typed error) before it is handled alone, and
# dead-lettered ``internal_error`` if it fails once more
MAX_STRIKES = 3
STRIKES_KEPT = 10_000  # records with strikes remembered (a bound; forgetting costs only retries)
LETTER_WAIT_S = 30.0  # how long a poll waits for the broker to take its dead letters

Where = tuple[str, int, int]  # a record's topic, partition, offset


class RecordFailed(Exception):
    """A poll failed with an unexpected exception; it was rewound and its records have a strike."""


def _where(rec: ConsumerRecord) -> Where:
    return (rec.topic, rec.partition, rec.offset)


class Intake:
    """One intake replica; several share the work through the consumer group."""

    def __init__(
        self,
        settings: Settings,
        new_consumer: Callable[[], KafkaConsumer],
        producer: KafkaProducer,
        store: ResultStore,
        celery: Celery,
        observer: Observer | None = None,
    ) -> None:
        self.s = settings
        self.observer = observer or Observer()
        self._new_consumer = new_consumer
        self.consumer = new_consumer()
        self.producer = producer
        self.store = store
        self.celery = celery
        self.served = ServedModels(store.client, settings)
        self.backpressure = Backpressure(
            store.in_flight_by_model,
            sorted(CATALOG),
            settings.backpressure_max_inflight,
            settings.backpressure_resume_ratio,
            counted=self.served.available,
        )
        self.hold = PartitionHold(self.backpressure)
        self.doorbell = Doorbell(settings) if settings.intake_doorbell else None
        self.stall = StallWatch()
        self.strikes: dict[Where, int] = {}
        self._letters: list[results.Letter] = []
        self.lost = LostRecords(settings, store, producer, self.observer)
        self.truncation = TruncationWatch(
            lambda: KafkaConsumer(**kafka_client_options(settings)), settings.kafka_truncation_check_s
        )
        self.tenancy = TenantAuth.from_settings(settings)  # INFERQ_KAFKA_TENANT_AUTH (schemas.tenancy)
        self._rung_polls = 0  # polls still owed to the last ring
        self.trim = CommittedTrim(
            lambda: KafkaAdminClient(**kafka_options(settings), request_timeout_ms=5_000),
            settings.kafka_trim_committed_every_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Intake:
        producer = KafkaProducer(
            **kafka_client_options(settings),
            acks="all",
            linger_ms=2,
            retries=10,
            max_request_size=settings.kafka_max_request_bytes,
        )
        telemetry = Telemetry(settings)
        store = ResultStore.from_settings(settings, telemetry)
        return cls(settings, lambda: new_consumer(settings), producer, store, make_app(settings), telemetry)

    def run(self, stop: threading.Event) -> None:
        """Poll, hand off, commit, until ``stop`` is set; then close (every handled poll is committed).

        After an empty poll the loop pauses before the next: some brokers (the local one among
        them) answer an empty fetch at once instead of holding it for ``fetch_max_wait_ms``, and
        kafka-python would spin a core on them, stealing it from the model. The pause doubles from
        1 ms up to ``kafka_idle_poll_max_ms`` (the most a request arriving in steady traffic
        waits), and after ``kafka_quiet_after_ms`` without records stretches to
        ``kafka_quiet_poll_ms`` (the most the first request after a quiet spell waits). With the
        doorbell on (``intake_doorbell``) an empty poll is followed by a wait on it of up to
        ``kafka_quiet_poll_ms`` instead: clients that ring are picked up as soon as they have rung,
        and the rare polls leave the model's cores alone (:mod:`workers.store.doorbell`).
        """
        pause_s, quiet_since, retry_s = 0.0, time.monotonic(), RETRY_FIRST_S
        try:
            while not stop.is_set():
                try:
                    handled = self.step()
                    retry_s = RETRY_FIRST_S
                except REBALANCING as e:  # the next poll rejoins; uncommitted records come again (harmless)
                    log.info("commit refused during a rebalance (%s); rejoining", type(e).__name__)
                    continue
                except RETRYABLE as e:
                    log.warning("hand-off failed (%r); the poll is rewound, retrying in %.1f s", e, retry_s)
                    stop.wait(retry_s)
                    retry_s = min(RETRY_MAX_S, retry_s * 2)
                    continue
                except RecordFailed as e:  # logged with its traceback where it was struck
                    log.warning("%s; retrying in %.1f s", e, RETRY_FIRST_S)
                    stop.wait(RETRY_FIRST_S)
                    continue
                except Exception:  # not a record's doing (those are struck above): never exit on it
                    log.exception("intake step failed; retrying in %.1f s", retry_s)
                    stop.wait(retry_s)
                    retry_s = min(RETRY_MAX_S, retry_s * 2)
                    continue
                if handled:
                    pause_s, quiet_since, self._rung_polls = 0.0, time.monotonic(), 0
                    continue
                try:
                    pause_s = self._idle(stop, pause_s, quiet_since)
                except Exception:  # housekeeping (doorbell, trim, stall check): never exit on it
                    log.warning("intake housekeeping failed; retrying in %.1f s", retry_s, exc_info=True)
                    stop.wait(retry_s)
        finally:
            self.producer.flush()
            self.consumer.close(autocommit=False)
            self.producer.close()
            leave_group(self.s)
            self.trim.close()
            self.truncation.close()
            if self.doorbell is not None:
                self.doorbell.close()

    def _idle(self, stop: threading.Event, pause_s: float, quiet_since: float) -> float:
        """After an empty poll: housekeeping, then wait for a reason to poll again; returns the
        pause (doorbell off: doubling up to its cap, see :meth:`run`)."""
        s = self.s
        self._check_stall()
        self.lost.sweep(self.consumer)
        if self.truncation.due():
            self.truncation.check(self.consumer)
            self.trim.committed(self.truncation.trimmable({}))  # what was just read back may go
        if self.trim.due(idle=True):
            self.trim.trim()
        if self.doorbell is not None:  # a ring (kept until popped) wakes it: no brisk polls
            if self._rung_polls:  # rung, yet nothing read: that poll harvested a fetch sent before
                self._rung_polls -= 1  # the record arrived (kafka-python keeps one in flight)
                return pause_s
            mine = [tp.partition for tp in self.consumer.assignment()]
            if self.doorbell.wait(mine, s.kafka_quiet_poll_ms / 1000.0, stop):
                self._rung_polls = RUNG_POLLS
            return pause_s
        quiet = (time.monotonic() - quiet_since) * 1000.0 >= s.kafka_quiet_after_ms
        cap_ms = s.kafka_quiet_poll_ms if quiet else s.kafka_idle_poll_max_ms
        pause_s = min(cap_ms / 1000.0, max(0.001, pause_s * 2))
        stop.wait(pause_s)
        return pause_s

    def step(self) -> int:
        """One poll → hand-off → commit cycle; returns the number of records handled."""
        try:
            return self._step()
        except unreadable.UNPACK_ERRORS as e:  # a record the Kafka client cannot unpack
            log.warning("the Kafka client could not unpack a record (%r); finding it", e)
            return self._skip_unreadable(e)

    def _skip_unreadable(self, cause: Exception) -> int:
        """Dead-letter the records the Kafka client could not unpack (:mod:`workers.intake.unreadable`) and
        seek (and commit) past them; the seek also drops the batch the client would otherwise loop
        on. Returns how many were skipped."""
        found = unreadable.find(
            self.consumer,
            lambda: KafkaConsumer(
                **kafka_client_options(self.s),
                enable_auto_commit=False,
                max_partition_fetch_bytes=max(1_048_576, self.s.kafka_max_message_bytes * 2),
            ),
        )
        if found is None:  # not found (the broker is away?): a new consumer at least drops the dead batch
            self._replace_consumer()
            return 0
        tp, offsets = found
        error = InvalidRequest(
            f"the Kafka client cannot unpack this record ({type(cause).__name__}: {str(cause)[:200]}); "
            "its bytes could not be read",
            code=ErrorCode.INVALID_ENCODING,
            hint="publish header names as UTF-8, and compress with gzip or not at all",
        )
        log.warning("dead-lettering %d unreadable records of %s[%d] from %d", len(offsets), *tp, offsets[0])
        self.observer.dead_lettered(error.code.value, len(offsets))
        unreadable_letters = [
            results.dead_letter(
                self.s,
                error.info(),
                None,
                source_topic=tp.topic,
                source_partition=tp.partition,
                source_offset=o,
            )
            for o in offsets
        ]
        letters.deliver(self.producer, self.s, unreadable_letters, LETTER_WAIT_S)
        after = offsets[-1] + 1
        self.consumer.seek(tp, after)
        self.consumer.commit({tp: OffsetAndMetadata(after, "", -1)})
        if tp in self.hold.held:  # paused: the skim must not seek back onto them
            self.hold.held[tp] = max(self.hold.held[tp], after)
        return len(offsets)

    def _step(self) -> int:
        self.observer.polled()  # liveness: a stamp that stops means a dead or wedged intake
        room = self.hold.apply(self.consumer)
        if self.backpressure.paused:  # what needs no capacity is answered even while paused
            skimmed = self.hold.skim(self.consumer, self._needs_no_room, self.handle)
            if skimmed:
                return skimmed
        # Paused, this poll reads nothing but keeps the group going (a rebalance completes in poll).
        # Joining the group takes several round trips inside poll: give it time until assigned
        # (kafka-python restarts a join cut short). Once assigned, wait only briefly for the
        # broker's answer, so a fetch sent by this poll is harvested by it, not by the next one.
        timeout_ms = self.s.kafka_poll_wait_ms if self.consumer.assignment() else self.s.kafka_poll_timeout_ms
        polled = self.consumer.poll(
            timeout_ms=timeout_ms, max_records=max(1, min(self.s.kafka_max_poll_records, room))
        )
        if not polled:
            return 0
        self.stall.fed()
        try:
            handled = self.handle(polled)
        except Exception:
            for tp, batch in polled.items():  # read them again: the store makes the replay harmless
                self.consumer.seek(tp, batch[0].offset)
            raise
        self.consumer.commit()
        self.truncation.handled(polled)  # read back every few s: a cut log is read again
        if self.truncation.due():
            self.truncation.check(self.consumer)
        committed = {tp: batch[-1].offset + 1 for tp, batch in polled.items()}
        self.trim.committed(self.truncation.trimmable(committed))  # what was read back may go
        self.backpressure.admitted(handled)
        if self.trim.due(idle=False):
            self.trim.trim()
        return handled

    def _check_stall(self) -> None:
        """Replace a wedged consumer (:mod:`workers.intake.stall`); not while paused, when it reads nothing
        on purpose."""
        if self.backpressure.paused or not self.stall.wedged(self.consumer):
            return
        log.warning(
            "consumer fetched nothing for %.0f s with records behind it; replacing it",
            time.monotonic() - self.stall.fed_at,
        )
        self._replace_consumer()

    def _replace_consumer(self) -> None:
        with contextlib.suppress(Exception):
            self.consumer.close(autocommit=False)
        self.consumer = self._new_consumer()
        self.stall.reset()
        self.hold.reset()

    def _needs_no_room(self, record: ConsumerRecord) -> bool:
        """An invalid record (it is dead-lettered), a request already past its deadline (it is
        answered ``expired``) or one for a model nobody serves: none takes a model's capacity. A
        record that fails otherwise is handed on too: :meth:`handle` strikes it, then dead-letters it."""
        try:
            request = parse_request(record.value, self.s)
        except Exception:
            return True
        deadline = request.deadline_ms()
        return (deadline is not None and deadline <= now_ms()) or request.model not in self.served.available()

    def handle(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        """Validate and hand off one poll, its dead letters sent and acknowledged; returns the
        records handled. Raises what is transient (the caller rewinds); any other exception strikes
        every record of the poll and is raised as :class:`RecordFailed` (the caller rewinds too)."""
        received = now_ms()
        records = [r for batch in polled.values() for r in batch]
        self._letters = []
        try:
            struck = [r for r in records if self.strikes.get(_where(r), 0) >= MAX_STRIKES]
            if struck:
                alone = {_where(r) for r in struck}
                self._handle_records([r for r in records if _where(r) not in alone], received)
                for rec in struck:
                    self._handle_alone(rec, received)
            else:
                self._handle_records(records, received)
            self.producer.flush()
            lost = letters.deliver(self.producer, self.s, self._letters, LETTER_WAIT_S)
            if lost:
                log.error("%d dead letters refused by the broker for good; their records are skipped", lost)
        except RETRYABLE:
            raise
        except Exception as e:
            if len(self.strikes) > STRIKES_KEPT:
                self.strikes.clear()
            for rec in records:
                self.strikes[_where(rec)] = self.strikes.get(_where(rec), 0) + 1
            log.exception("handling %d records failed; they are read again", len(records))
            raise RecordFailed(f"handling a poll failed ({type(e).__name__}); rewound") from e
        finally:
            self._letters = []
        for rec in records:
            self.strikes.pop(_where(rec), None)
        return len(records)

    def _handle_records(self, records: list[ConsumerRecord], received: float) -> None:
        accepted: list[tuple[ConsumerRecord, InferenceRequest, dict[str, Any]]] = []
        for rec in records:
            try:
                request = parse_request(rec.value, self.s)
            except InvalidRequest as e:
                self.reject(rec, e, received, answer=True)
                continue
            try:  # unauthenticated: dead-lettered, never answered under an id its writer chose
                self.tenancy.check(rec.value, rec.headers, request)
            except (Unauthorized, Forbidden) as e:
                self.reject(rec, e, received, answer=False)
                continue
            accepted.append((rec, request, {"published_ms": float(rec.timestamp), "received_ms": received}))
        self.hand_off(accepted)
        # before the commit: the API's copies of these may go (workers.intake.lost)
        self.store.seen([req for rec, req, _ in accepted if _admitted(rec)])

    def _handle_alone(self, rec: ConsumerRecord, received: float) -> None:
        """A record whose polls failed ``MAX_STRIKES`` times: handled by itself, and dead-lettered
        ``internal_error`` if it fails again (what is transient is still raised: nothing is lost)."""
        try:
            self._handle_records([rec], received)
        except RETRYABLE:
            raise
        except Exception as e:
            attempts = self.strikes.get(_where(rec), 0) + 1
            log.exception("record %s[%d]@%d failed %d times; dead-lettering it", *_where(rec), attempts)
            error = InferqError(  # code internal_error
                f"the intake failed on this record {attempts} times ({type(e).__name__})",
                hint="this is a bug in inferq: report it with this dead letter",
                detail={"exception": type(e).__name__},
            )
            self.reject(rec, error, received, answer=True, attempts=attempts)

    def hand_off(self, accepted: list[tuple[ConsumerRecord, InferenceRequest, dict[str, Any]]]) -> None:
        """Admit to the result store, then send NEW and PENDING requests to Celery.

        A request for a model no live worker serves (past the grace, :mod:`workers.store.presence`) is
        answered ``model_unavailable`` and dead-lettered; one over its tenant's limits is answered
        ``quota_exceeded``. Neither is admitted, so neither holds any capacity."""
        available = self.served.available() if accepted else frozenset()
        for rec, req, t in [a for a in accepted if a[1].model not in available]:
            unserved = ModelUnavailable(f"no live worker serves model {req.model!r}")
            failed = results.result(req, ResultStatus.FAILED, {**t, "done_ms": now_ms()}, unserved)
            # over the API's ``queued`` record of this content too: it must not stay queued for ever
            self.store.fail_owned([([request_digest(req), bytes_digest(rec.value or b"")], failed)])
            self.reject(rec, unserved, t["received_ms"], answer=False)
        accepted = [a for a in accepted if a[1].model in available]
        if not accepted:
            return
        queued = now_ms()
        for _, _, t in accepted:
            t["queued_ms"] = queued
        sids = [scoped_id(req.tenant, req.request_id) for _, req, _ in accepted]
        pairs = list(zip(sids, accepted, strict=True))
        deadlines = {sid: d for sid, (_, req, _) in pairs if (d := req.deadline_ms()) is not None}
        handoffs = {sid: self._handoff(rec, req, t) for sid, (rec, req, t) in pairs}
        verdicts = self.store.admit(
            [(request_digest(req), results.queued_result(req, t)) for _, req, t in accepted],
            deadlines,
            handoffs,
        )
        by_queue: dict[tuple[str, int], list[dict[str, Any]]] = {}
        late: list[InferenceResult] = []
        for sid, (rec, req, t), verdict in zip(sids, accepted, verdicts, strict=True):
            if verdict.over_quota:  # not admitted: answered at once, costs the other tenants nothing
                over = quota_error(verdict, req.tenant, self.s)
                late.append(results.result(req, ResultStatus.FAILED, {**t, "done_ms": queued}, over))
                continue
            if verdict is not Admission.NEW:
                self.observer.redelivered(verdict.value)
            deadline = req.deadline_ms()
            if verdict in (Admission.NEW, Admission.PENDING) and deadline is not None and deadline <= queued:
                error = DeadlineExpired("deadline passed while the request waited in Kafka")
                late.append(results.result(req, ResultStatus.EXPIRED, {**t, "done_ms": queued}, error))
                continue
            if verdict is Admission.NEW:
                self.observer.admitted(req.model)
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
                h = handoffs[sid]
                by_queue.setdefault((h.queue, h.priority), []).append(h.item)
            elif verdict is Admission.CONFLICT:
                self.reject(rec, DuplicateRequestId(req.request_id), t["received_ms"], answer=False)
        self.store.advance(late)
        n = self.s.transport_batch_size
        for (queue, priority), items in sorted(by_queue.items(), key=lambda kv: kv[0][1]):
            for i in range(0, len(items), n):
                self.celery.send_task(TASK_INFER, args=[items[i : i + n]], queue=queue, priority=priority)

    def _handoff(self, rec: ConsumerRecord, req: InferenceRequest, timings: dict[str, Any]) -> Handoff:
        """Where a request goes in Celery and the item its message carries (kept by the store
        while the request is queued, so a lost message can be sent again)."""
        # the key bounded: a key may be as large as the broker allows, beside a small request
        key = rec.key[: results.KEY_MAX_BYTES].decode("utf-8", "replace") if rec.key else None
        source = Source(topic=rec.topic, partition=rec.partition, offset=rec.offset, key=key)
        item = WorkItem(request=req, timings=Timings(**timings), source=source)
        return Handoff.of(model_queue(self.s, req.model), CELERY_PRIORITY[req.priority], item)

    def reject(
        self,
        rec: ConsumerRecord,
        error: InferqError,
        received: float,
        *,
        answer: bool,
        attempts: int = 1,
    ) -> None:
        """Dead-letter a record (sent with the poll, acknowledged before its commit); with
        ``answer``, also write a ``failed`` result for its id, over a ``queued`` record of the same
        content (so a request the API admitted and the intake refuses does not stay queued)."""
        rid, tenant = salvage(rec.value)
        self.observer.dead_lettered(error.code.value)
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
        letter = results.dead_letter(
            self.s,
            error.info(),
            rec.value,
            source_topic=rec.topic,
            source_partition=rec.partition,
            source_offset=rec.offset,
            key=rec.key,
            request_id=rid,
            attempts=attempts,
        )
        # under signed tenants, only a record its tenant signed is answered (no squatting by letters)
        if answer and rid and self.tenancy.may_answer(rec.value, rec.headers, tenant):
            timings = Timings(published_ms=float(rec.timestamp), received_ms=received, done_ms=now_ms())
            failed = results.salvaged_result(rid, letter.letter.error, timings, tenant=tenant)
            digests = [bytes_digest(rec.value or b"")]
            with contextlib.suppress(Exception):  # parsed, it may be stored under its wire digest
                digests.append(request_digest(parse_request(rec.value, self.s)))
            try:
                self.store.fail_owned([(digests, failed)])
            except RETRYABLE:
                raise
            except Exception:  # the record itself may be what breaks the store: the letter still goes
                log.exception("could not write the failed answer for %s", rid)
        self._letters.append(letter)


def _admitted(rec: ConsumerRecord) -> bool:
    """Whether the API admitted this record's request before publishing it (its header says so)."""
    return any(k == ADMITTED_HEADER for k, _ in rec.headers or ())


def main() -> None:
    settings = get_settings()
    configure_logging(settings, "intake")
    if yield_cpu(settings.intake_cpu_policy):
        log.info("intake runs at SCHED_IDLE (INFERQ_INTAKE_CPU_POLICY=idle)")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    intake = Intake.from_settings(settings)
    if (retention := retention_warning(settings)) is not None:  # workers.intake.retention
        log.warning(retention)
    log.info("intake consuming %s as group %s", requests_topic(settings), settings.kafka_group_id)
    intake.run(stop)
    log.info("intake stopped")
    stop_logging()


if __name__ == "__main__":
    main()

__all__ = ["Intake", "main"]
