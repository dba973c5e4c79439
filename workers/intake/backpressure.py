"""Backpressure: keep a model's backlog in Kafka, not in Celery, Redis or the worker's memory.

Before each poll the intake asks how many more requests each model may admit: the bound
``INFERQ_BACKPRESSURE_MAX_INFLIGHT`` minus that model's requests admitted and not finished (a
set the store keeps exact), read every ``CHECK_S`` (every ``CHECK_FAR_S`` while at least half
the bound is free). The poll reads at most the smallest of these, so no model ever
passes its bound. Only models a live worker serves count (:mod:`workers.store.presence`): requests for
a model nobody serves are answered ``model_unavailable``, never left to fill the bound. When a
model reaches it, the intake pauses its partitions (the requests topic is shared, so that is
all of them) and keeps polling, so the group keeps it; they resume once every model is below
``resume_ratio`` of the bound. What waits, waits in Kafka, uncommitted.

While paused, :class:`PartitionHold` still reads the head of each partition every
``SKIM_EVERY_S``: requests there whose deadline has passed (and records that are invalid) need no
capacity, so they are answered at once (``expired``, or dead-lettered) and committed past; the rest
is left where it was. Under overload the oldest records expire first, so a request that waits in
Kafka past its deadline is answered within about ``SKIM_EVERY_S`` of it, not when its turn comes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence

from kafka import KafkaConsumer
from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import OffsetAndMetadata, TopicPartition

log = logging.getLogger(__name__)

# how often the counters are read while records flow (one Redis MGET); paused, at most this often too
CHECK_S = 0.005
# far from the bound (at least half of it left) a reading is good for this long: a lone request
# skips the read (~0.35 ms), and what other intakes admit meanwhile stays well inside the margin
CHECK_FAR_S = 0.1
SKIM_EVERY_S = 0.25  # while paused, how often the backlog's head is read for what needs no capacity


class Backpressure:
    """Decides, before each poll, whether to read and how many records at most."""

    def __init__(
        self,
        in_flight: Callable[[Sequence[str]], dict[str, int]],
        models: Sequence[str],
        max_inflight: int,
        resume_ratio: float,
        counted: Callable[[], Collection[str]] | None = None,
    ) -> None:
        self._in_flight = in_flight
        self.models = list(models)
        # the models worth counting now (those a live worker serves, workers.store.presence); a model
        # nobody serves must not hold every other model's traffic at its bound
        self._counted = counted
        self.max_inflight = max_inflight
        self.resume_below = max(1, int(max_inflight * resume_ratio))
        self.paused = False
        self.saturated: list[str] = []  # the models at their bound, while paused
        self._room = max_inflight
        self._next_check = 0.0

    def room(self, now_s: float | None = None) -> int:
        """How many records the next poll may read (0 = stay paused); updates ``paused``."""
        now_s = time.monotonic() if now_s is None else now_s
        # a cached reading serves until the next check, except one used up by our own admissions:
        # room 0 while not paused is read again at once (a poll reads at least one record)
        if now_s < self._next_check and (self.paused or self._room > 0):
            return 0 if self.paused else self._room
        self._next_check = now_s + CHECK_S
        if self._counted is None:
            models = self.models
        else:
            counted = self._counted()
            models = [m for m in self.models if m in counted]
        counts = self._in_flight(models) if models else {}
        busiest = max(counts.values(), default=0)
        if self.paused and busiest < self.resume_below:
            self.paused, self.saturated = False, []
        elif not self.paused and busiest >= self.max_inflight:
            self.paused = True
            self.saturated = sorted(m for m, n in counts.items() if n >= self.max_inflight)
        self._room = 0 if self.paused else self.max_inflight - busiest
        if self._room * 2 >= self.max_inflight:
            self._next_check = now_s + CHECK_FAR_S
        return self._room

    def admitted(self, n: int, now_s: float | None = None) -> None:
        """``n`` requests were just admitted: the room left shrinks until the next read (sooner
        once it is no longer far from the bound)."""
        self._room = max(0, self._room - n)
        if self._room * 2 < self.max_inflight:
            now_s = time.monotonic() if now_s is None else now_s
            self._next_check = min(self._next_check, now_s + CHECK_S)


Polled = dict[TopicPartition, list[ConsumerRecord]]


class PartitionHold:
    """Pauses the intake consumer's partitions while :class:`Backpressure` says so, and resumes
    them at the positions they had (kafka-python's fetcher can otherwise stop fetching resumed
    partitions, or skip ahead of records it dropped while paused)."""

    def __init__(self, backpressure: Backpressure) -> None:
        self.backpressure = backpressure
        self.held: dict[TopicPartition, int] = {}  # paused partition → its position
        self._skimmed_s = 0.0

    def apply(self, consumer: KafkaConsumer) -> int:
        """Pause or resume as the bound says; returns how many records the next poll may read."""
        room = self.backpressure.room()
        assigned = consumer.assignment()
        if self.backpressure.paused and set(self.held) != assigned:
            fresh = [tp for tp in assigned if tp not in self.held]
            self.held.update({tp: consumer.position(tp) for tp in fresh})
            consumer.pause(*fresh)
            if len(self.held) == len(fresh):
                log.warning(
                    "backpressure: %s at %d requests in flight; partitions paused (backlog stays in Kafka)",
                    ", ".join(self.backpressure.saturated),
                    self.backpressure.max_inflight,
                    extra={"event.dataset": "inferq.intake", "inferq.stage": "paused"},
                )
        elif not self.backpressure.paused and self.held:
            held, self.held = self.held, {}
            mine = [tp for tp in held if tp in assigned]
            consumer.resume(*mine)
            for tp in mine:
                consumer.seek(tp, held[tp])
            log.info(
                "backpressure: below %d in flight; partitions resumed",
                self.backpressure.resume_below,
                extra={"event.dataset": "inferq.intake", "inferq.stage": "resumed"},
            )
        return room

    def skim(
        self,
        consumer: KafkaConsumer,
        needs_no_room: Callable[[ConsumerRecord], bool],
        handle: Callable[[Polled], int],
        wait_ms: int = 20,
    ) -> int:
        """While paused: hand ``handle`` the records at the head of each partition that need no
        capacity (``needs_no_room``), commit past them, and put the positions back on the first
        record that does. Returns the records handled. The held positions move only once
        ``handle`` and the commit succeeded: when either raises, every partition is put back where
        it was (a transient failure must not skip records)."""
        now = time.monotonic()
        if not self.held or now - self._skimmed_s < SKIM_EVERY_S:
            return 0
        self._skimmed_s = now
        held = [tp for tp in self.held if tp in consumer.assignment()]
        for tp in held:
            consumer.seek(tp, self.held[tp])
        consumer.resume(*held)
        try:
            polled = consumer.poll(timeout_ms=wait_ms)
        finally:  # a rebalance inside the poll may have taken some away
            consumer.pause(*[tp for tp in held if tp in consumer.assignment()])
        heads: Polled = {}
        after: dict[TopicPartition, int] = {}  # where each partition stands once its head is handled
        for tp, records in polled.items():
            if tp not in self.held:
                continue
            n = 0
            while n < len(records) and needs_no_room(records[n]):
                n += 1
            if n:
                heads[tp] = records[:n]
            after[tp] = records[n].offset if n < len(records) else records[-1].offset + 1
        try:
            handled = handle(heads) if heads else 0
            if heads:
                consumer.commit({tp: OffsetAndMetadata(after[tp], "", -1) for tp in heads})
        except Exception:  # nothing was skipped: the next skim (or the resume) reads them again
            for tp in polled:
                if tp in self.held:
                    consumer.seek(tp, self.held[tp])
            raise
        self.held.update(after)
        for tp, offset in after.items():
            consumer.seek(tp, offset)
        return handled

    def rewound(self, positions: dict[TopicPartition, int]) -> None:
        """The consumer was sought back on these partitions (a cut log is read again,
        :mod:`workers.intake.truncation`): a held one resumes there, not where it was paused."""
        for tp, offset in positions.items():
            if tp in self.held:
                self.held[tp] = min(self.held[tp], offset)

    def reset(self) -> None:
        """The consumer was replaced: nothing is held by the new one."""
        self.held = {}
