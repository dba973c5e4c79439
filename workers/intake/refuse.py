"""Refusing records: dead letters, strikes, and batches the Kafka client cannot unpack.

No record can stop the intake. Every failure to decode or validate one is a typed dead letter
(:mod:`schemas.validation`, :mod:`schemas.results`: a letter always fits the producer's limit),
sent with its poll and acknowledged before the poll is committed. Any other exception while
handling a poll (a bug, a type nobody expected) rewinds it and gives each of its records a strike
(:meth:`~workers.intake.admit.Admissions.handle`); a record with ``MAX_STRIKES`` strikes is then
handled alone, and dead-lettered ``internal_error`` (with the exception type) if it fails again, so
a poison record costs a few retries, never the partition.
"""

from __future__ import annotations

import contextlib
import logging

from celery import Celery
from kafka import KafkaConsumer, KafkaProducer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata
from kombu.exceptions import OperationalError

from schemas import results, tracing
from schemas.errors import ErrorCode, InferqError, InvalidRequest
from schemas.messages import Timings, now_ms
from schemas.naming import scoped_id
from schemas.observer import Observer
from schemas.replies import Targets
from schemas.settings import Settings
from schemas.tenancy import TenantAuth
from schemas.tracing import TraceContext
from schemas.validation import parse_request, salvage
from workers.intake import unreadable
from workers.intake.backpressure import PartitionHold
from workers.intake.consumer import new_reader
from workers.store.presence import ServedModels
from workers.store.store import TRANSIENT_ERRORS, ResultStore, bytes_digest, request_digest
from workers.store.versions import Rollouts
from workers.transport import letters

log = logging.getLogger(__name__)

# failures that pass: the poll is rewound and tried again after a pause
RETRYABLE: tuple[type[Exception], ...] = (*TRANSIENT_ERRORS, OperationalError, KafkaError)
# polls a record may fail (with anything but a typed error) before it is handled alone, and
# dead-lettered ``internal_error`` if it fails once more
MAX_STRIKES = 3
STRIKES_KEPT = 10_000  # records with strikes remembered (a bound; forgetting costs only retries)
LETTER_WAIT_S = 30.0  # how long a poll waits for the broker to take its dead letters

Where = tuple[str, int, int]  # a record's topic, partition, offset


class RecordFailed(Exception):
    """A poll failed with an unexpected exception; it was rewound and its records have a strike."""


def where_of(rec: ConsumerRecord) -> Where:
    return (rec.topic, rec.partition, rec.offset)


class Refusals:
    """Dead-lettering and striking records; the root of :class:`workers.intake.loop.Intake`, which
    sets the state below in its constructor."""

    s: Settings
    observer: Observer
    consumer: KafkaConsumer
    producer: KafkaProducer
    store: ResultStore
    celery: Celery
    served: ServedModels
    rollouts: Rollouts
    hold: PartitionHold
    tenancy: TenantAuth
    strikes: dict[Where, int]
    _letters: list[results.Letter]

    def _handle_records(self, records: list[ConsumerRecord], received: float) -> None:
        raise NotImplementedError  # validates and hands off: workers.intake.admit.Admissions

    def _replace_consumer(self) -> None:
        raise NotImplementedError  # a fresh consumer: workers.intake.loop.Intake

    def _trace(self, rec: ConsumerRecord) -> TraceContext:
        """The intake's span for a record's request: a child of its ``traceparent`` header's, or
        the root of a new trace (a missing, repeated or invalid header: ignored, and counted)."""
        incoming = tracing.from_record_headers(rec.headers)
        if incoming.ignored:
            self.observer.trace_ignored("kafka")
        return tracing.received(incoming.parent)

    def reject(
        self,
        rec: ConsumerRecord,
        error: InferqError,
        received: float,
        *,
        answer: bool,
        attempts: int = 1,
        trace: TraceContext | None = None,
    ) -> None:
        """Dead-letter a record (sent with the poll, acknowledged before its commit); with
        ``answer``, also write a ``failed`` result for its id, over a ``queued`` record of the same
        content (so a request the API admitted and the intake refuses does not stay queued)."""
        rid, tenant = salvage(rec.value)
        trace = trace or self._trace(rec)
        self.observer.dead_lettered(error.code.value)
        _log_letter(rec, error, rid, trace)
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
            failed = results.salvaged_result(rid, letter.letter.error, timings, tenant=tenant, trace=trace)
            digests = [bytes_digest(rec.value or b"")]
            with contextlib.suppress(Exception):  # parsed, it may be stored under its wire digest
                digests.append(request_digest(parse_request(rec.value, self.s)))
            # a refused record's own targets are not trusted; the deployment's results topic is
            everything = Targets((self.s.results_topic,)).to_json() if self.s.results_topic else ""
            deliveries = {scoped_id(tenant, rid): everything} if everything else None
            try:
                self.store.fail_owned([(digests, failed)], deliveries)
            except RETRYABLE:
                raise
            except Exception:  # the record itself may be what breaks the store: the letter still goes
                log.exception("could not write the failed answer for %s", rid)
        self._letters.append(letter)

    def _handle_alone(self, rec: ConsumerRecord, received: float) -> None:
        """A record whose polls failed ``MAX_STRIKES`` times: handled by itself, and dead-lettered
        ``internal_error`` if it fails again (what is transient is still raised: nothing is lost)."""
        try:
            self._handle_records([rec], received)
        except RETRYABLE:
            raise
        except Exception as e:
            attempts = self.strikes.get(where_of(rec), 0) + 1
            log.exception("record %s[%d]@%d failed %d times; dead-lettering it", *where_of(rec), attempts)
            error = InferqError(  # code internal_error
                f"the intake failed on this record {attempts} times ({type(e).__name__})",
                hint="this is a bug in inferq: report it with this dead letter",
                detail={"exception": type(e).__name__},
            )
            self.reject(rec, error, received, answer=True, attempts=attempts)

    def _skip_unreadable(self, cause: Exception) -> int:
        """Dead-letter the records the Kafka client could not unpack (:mod:`workers.intake.unreadable`) and
        seek (and commit) past them; the seek also drops the batch the client would otherwise loop
        on. Returns how many were skipped."""
        found = unreadable.find(
            self.consumer,
            lambda: new_reader(self.s),
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


def _log_letter(rec: ConsumerRecord, error: InferqError, rid: str | None, trace: TraceContext) -> None:
    """One ECS record per dead letter (``inferq.deadletter``), where it came from and why."""
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
            "trace.id": trace.trace_id,
            "span.id": trace.span_id,
        },
    )
