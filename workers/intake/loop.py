"""The intake's poll → hand-off → commit loop, its idle pauses and housekeeping, and its lifecycle.

For each poll: validate and admit every record (:mod:`workers.intake.admit`), dead-letter what is
refused (:mod:`workers.intake.refuse`), and only then commit the offsets. A crash anywhere before
the commit replays the records, and the result store makes the replay harmless.

A model with ``INFERQ_BACKPRESSURE_MAX_INFLIGHT`` requests in flight pauses the partitions while
the intake keeps polling, and still answers the expired and invalid records at their head
(:mod:`workers.intake.backpressure`). Transient failures (Redis or the Celery broker unreachable
past the clients' own retries, Kafka errors) rewind the poll and retry it with backoff; nothing is
committed until a poll is fully handed off, its dead letters included. Nothing a record does ends
the process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from celery import Celery
from kafka import KafkaAdminClient
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import CommitFailedError, RebalanceInProgressError
from kafka.structs import OffsetAndMetadata, TopicPartition

from schemas import results
from schemas.catalog import CATALOG
from schemas.connections import kafka_options, kafka_producer
from schemas.observer import Observer
from schemas.settings import Settings
from schemas.tenancy import TenantAuth
from workers.intake import unreadable
from workers.intake.admit import Admissions
from workers.intake.backpressure import Backpressure, PartitionHold
from workers.intake.consumer import leave_group, new_consumer, new_reader
from workers.intake.lost import LostRecords
from workers.intake.refuse import RETRYABLE, RecordFailed, Where
from workers.intake.stall import StallWatch
from workers.intake.trim import CommittedTrim
from workers.intake.truncation import TruncationWatch
from workers.store.doorbell import Doorbell
from workers.store.presence import ServedModels
from workers.store.store import ResultStore
from workers.store.versions import Rollouts
from workers.telemetry.observe import Telemetry
from workers.transport.app import make_app

log = logging.getLogger(__name__)

RETRY_FIRST_S, RETRY_MAX_S = 0.5, 10.0
# after a ring, polls that may come back empty before the intake waits again: the first harvests
# the fetch kafka-python sent before the record arrived (the local broker answers it at once,
# empty); without them a ringing record waited a whole kafka_quiet_poll_ms, 1 in 100 at low load
RUNG_POLLS = 2
REBALANCING: tuple[type[Exception], ...] = (CommitFailedError, RebalanceInProgressError)


class Intake(Admissions):
    """One intake replica; several share the work through the consumer group."""

    def __init__(
        self,
        settings: Settings,
        new_consumer: Callable[[], Any],
        producer: Any,
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
        self.rollouts = Rollouts(store.client, settings)  # where unpinned requests go (schemas.versions)
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
        self.truncation = TruncationWatch(lambda: new_reader(settings), settings.kafka_truncation_check_s)
        self.tenancy = TenantAuth.from_settings(settings)  # INFERQ_KAFKA_TENANT_AUTH (schemas.tenancy)
        self._rung_polls = 0  # polls still owed to the last ring
        self.trim = CommittedTrim(
            lambda: KafkaAdminClient(**kafka_options(settings), request_timeout_ms=5_000),
            settings.kafka_trim_committed_every_s,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> Intake:
        producer = kafka_producer(
            settings, linger_ms=2, retries=10, max_request_size=settings.kafka_max_request_bytes
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
                except REBALANCING as e:  # handled, not committed: read again at worst (harmless)
                    log.info("commit refused during a rebalance (%s); rejoining", type(e).__name__)
                    self._rejoin()
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
            self._close()

    def _close(self) -> None:
        """Flush and close every client; the group is left at once (its partitions move now)."""
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
            self._check_truncation()
            self.trim.committed(self.truncation.trimmable({}))  # what was just read back may go
        if self.trim.due(idle=True):
            self.trim.trim()
        if self.doorbell is not None:  # a ring (kept until popped) wakes it: no brisk polls
            if self._rung_polls:  # rung, yet nothing read: that poll harvested a fetch sent before
                self._rung_polls -= 1  # the record arrived (kafka-python keeps one in flight)
                return pause_s
            mine = [tp.partition for tp in self.consumer.assignment()]
            self.consumer.idle()  # no fetching while it waits (librdkafka would fetch on and on)
            try:
                if self.doorbell.wait(mine, s.kafka_quiet_poll_ms / 1000.0, stop):
                    self._rung_polls = RUNG_POLLS
            finally:
                self.consumer.wake()
            return pause_s
        quiet = (time.monotonic() - quiet_since) * 1000.0 >= s.kafka_quiet_after_ms
        cap_ms = s.kafka_quiet_poll_ms if quiet else s.kafka_idle_poll_max_ms
        pause_s = min(cap_ms / 1000.0, max(0.001, pause_s * 2))
        self.consumer.idle()
        try:
            stop.wait(pause_s)
        finally:
            self.consumer.wake()
        return pause_s

    def step(self) -> int:
        """One poll → hand-off → commit cycle; returns the number of records handled."""
        try:
            return self._step()
        except unreadable.UNPACK_ERRORS as e:  # a record the Kafka client cannot unpack
            log.warning("the Kafka client could not unpack a record (%r); finding it", e)
            return self._skip_unreadable(e)

    def _step(self) -> int:
        self.observer.polled()  # liveness: a stamp that stops means a dead or wedged intake
        room = self.hold.apply(self.consumer)
        if self.backpressure.paused:  # what needs no capacity is answered even while paused
            skimmed = self.hold.skim(self.consumer, self._needs_no_room, self._handle_marked)
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
            handled = self._handle_marked(polled)  # marked before the commit, which may be refused
        except Exception:
            for tp, batch in polled.items():  # read them again: the store makes the replay harmless
                self.consumer.seek(tp, batch[0].offset)
            raise
        # counted before the commit: one refused by a rebalance must not leave the room those
        # admissions took unaccounted (the next polls would pass the bound)
        self.backpressure.admitted(handled)
        self.consumer.commit()
        if self.truncation.due():
            self._check_truncation()
        committed = {tp: batch[-1].offset + 1 for tp, batch in polled.items()}
        self.trim.committed(self.truncation.trimmable(committed))  # what was read back may go
        if self.trim.due(idle=False):
            self.trim.trim()
        return handled

    def _rejoin(self) -> None:
        """Finish the group join a refused commit revealed (:meth:`PlainConsumer.rejoin`), waiting
        at most a session timeout; one that does not finish is tried again at the next refusal."""
        try:
            if not self.consumer.rejoin(self.s.kafka_session_timeout_ms):
                log.warning("rejoining the group took over %d ms", self.s.kafka_session_timeout_ms)
        except Exception as e:  # the broker is away: the next refusal tries again
            log.warning("rejoining the group failed (%r); trying again at the next commit", e)

    def _handle_marked(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        """:meth:`handle`, then mark what it handled for the truncation watch (read back every few
        s: a cut log is read again), for a poll and for the records a pause's skim answers alike."""
        handled = self.handle(polled)
        self.truncation.handled(polled)
        return handled

    def _check_truncation(self) -> None:
        """Read back what was handled; where the log was cut, the consumer was rewound, and so are
        the position a paused partition resumes at (the check runs between the empty polls of a
        pause too, and a resume that sought the old position would skip what took the lost
        offsets) and the group's offset (an intake that takes the partition over during a pause,
        or this one restarted, starts from it)."""
        rewound = self.truncation.check(self.consumer)
        if rewound:
            self.hold.rewound(rewound)
            self.consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in rewound.items()})

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
