"""Admitting a poll: validate each record, admit it to the result store, hand it off to Celery.

A request is recorded ``queued`` in Redis (ADMIT, :mod:`workers.store.admission`) before it is sent
to its model's Celery queue, many per message; what cannot go on is refused
(:mod:`workers.intake.refuse`): invalid or unauthenticated records are dead-lettered, requests for a
model nobody serves answered ``model_unavailable``, over their tenant's limits ``quota_exceeded``,
past their deadline ``expired``.
"""

from __future__ import annotations

import logging
from typing import Any, NamedTuple

from kafka.consumer.fetcher import ConsumerRecord
from kafka.structs import TopicPartition

from schemas import results
from schemas.errors import (
    DeadlineExpired,
    DuplicateRequestId,
    Forbidden,
    InvalidRequest,
    ModelUnavailable,
    Unauthorized,
)
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus, Timings, now_ms
from schemas.naming import ADMITTED_HEADER, model_queue, scoped_id, version_queue
from schemas.observer import INTAKE_SPAN, RequestSpan
from schemas.replies import targets_json
from schemas.tracing import TraceContext
from schemas.validation import parse_request
from schemas.versions import Route
from schemas.work import Handoff, Source, WorkItem
from workers.intake.refuse import (
    LETTER_WAIT_S,
    MAX_STRIKES,
    RETRYABLE,
    STRIKES_KEPT,
    RecordFailed,
    Refusals,
    where_of,
)
from workers.store.store import Admission, bytes_digest, quota_error, request_digest
from workers.telemetry.logs import mask_text
from workers.transport import letters
from workers.transport.app import CELERY_PRIORITY, TASK_INFER

log = logging.getLogger(__name__)


class Accepted(NamedTuple):
    """A record that validated: its request, timings so far (epoch ms) and the intake's span for it."""

    record: ConsumerRecord
    request: InferenceRequest
    timings: dict[str, Any]
    trace: TraceContext


class Admissions(Refusals):
    """Validating, admitting and handing off the records of one poll."""

    def _needs_no_room(self, record: ConsumerRecord) -> bool:
        """An invalid record (it is dead-lettered), a request already past its deadline (it is
        answered ``expired``) or one for a model nobody serves: none takes a model's capacity. A
        record that fails otherwise is handed on too: :meth:`handle` strikes it, then dead-letters it."""
        try:
            request = parse_request(record.value, self.s)
        except Exception:
            return True
        deadline = request.deadline_ms()
        served_as = self.route(request).served_as
        return (deadline is not None and deadline <= now_ms()) or not self.served.is_available(served_as)

    def handle(self, polled: dict[TopicPartition, list[ConsumerRecord]]) -> int:
        """Validate and hand off one poll, its dead letters sent and acknowledged; returns the
        records handled. Raises what is transient (the caller rewinds); any other exception strikes
        every record of the poll and is raised as :class:`RecordFailed` (the caller rewinds too)."""
        received = now_ms()
        records = [r for batch in polled.values() for r in batch]
        self._letters = []
        try:
            struck = [r for r in records if self.strikes.get(where_of(r), 0) >= MAX_STRIKES]
            if struck:
                alone = {where_of(r) for r in struck}
                self._handle_records([r for r in records if where_of(r) not in alone], received)
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
                self.strikes[where_of(rec)] = self.strikes.get(where_of(rec), 0) + 1
            log.exception("handling %d records failed; they are read again", len(records))
            raise RecordFailed(f"handling a poll failed ({type(e).__name__}); rewound") from e
        finally:
            self._letters = []
        for rec in records:
            self.strikes.pop(where_of(rec), None)
        return len(records)

    def _handle_records(self, records: list[ConsumerRecord], received: float) -> None:
        accepted: list[Accepted] = []
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
            t = {"published_ms": float(rec.timestamp), "received_ms": received}
            accepted.append(Accepted(rec, request, t, self._trace(rec)))
        self.hand_off(accepted)
        # before the commit: the API's copies of these may go (workers.intake.lost)
        self.store.seen([a.request for a in accepted if _admitted(a.record)])

    def hand_off(self, accepted: list[Accepted]) -> None:
        """Admit to the result store, then send NEW and PENDING requests to Celery.

        A request for a model no live worker serves (past the grace, :mod:`workers.store.presence`) is
        answered ``model_unavailable`` and dead-lettered; one over its tenant's limits is answered
        ``quota_exceeded``. Neither is admitted, so neither holds any capacity."""
        routes = {id(a.request): self.route(a.request) for a in accepted}
        accepted = self._served_only(accepted, routes)
        if not accepted:
            return
        queued = now_ms()
        for a in accepted:
            a.timings["queued_ms"] = queued
        sids = [scoped_id(a.request.tenant, a.request.request_id) for a in accepted]
        handoffs = [self._handoff(*a, routes[id(a.request)]) for a in accepted]
        # the store's by scoped id: a poll may hold one id twice (a retry, or another payload under
        # the same id); the first record is the one admitted, so its values must be the ones kept
        # (a later one's hand-off would send the other payload under the admitted record)
        deadlines: dict[str, float] = {}
        kept: dict[str, Handoff] = {}
        deliveries: dict[str, str] = {}  # where each terminal result also goes (reply topics, webhooks)
        for sid, (_, req, _, _), h in zip(sids, accepted, handoffs, strict=True):
            if sid not in kept:
                kept[sid] = h
                if (d := req.deadline_ms()) is not None:
                    deadlines[sid] = d
                if targets := targets_json(req, self.s):
                    deliveries[sid] = targets
        verdicts = self.store.admit(
            [(request_digest(req), results.queued_result(req, t, trace)) for _, req, t, trace in accepted],
            deadlines,
            kept,
            deliveries,
        )
        # a request read again goes where it went the first time, whatever the rollout says now
        pending = [sid for sid, v in zip(sids, verdicts, strict=True) if v is Admission.PENDING]
        kept_before = self.store.kept(pending)
        handoffs = [kept_before.get(sid, h) for sid, h in zip(sids, handoffs, strict=True)]
        by_queue: dict[tuple[str, int], list[dict[str, Any]]] = {}
        sent: set[str] = set()  # a scoped id goes to Celery once per poll, however often it was read
        late: list[InferenceResult] = []
        again: dict[str, int] = {}  # requests read again, by verdict: counted once per poll
        spans: list[RequestSpan] | None = [] if self.observer.tracing else None  # exported spans only
        for sid, (rec, req, t, trace), h, verdict in zip(sids, accepted, handoffs, verdicts, strict=True):
            if verdict.over_quota:  # not admitted: answered at once, costs the other tenants nothing
                over = quota_error(verdict, req.tenant, self.s)
                late.append(
                    results.result(req, ResultStatus.FAILED, {**t, "done_ms": queued}, over, trace=trace)
                )
                continue
            if verdict is not Admission.NEW:
                again[verdict.value] = again.get(verdict.value, 0) + 1
            deadline = req.deadline_ms()
            if verdict in (Admission.NEW, Admission.PENDING) and deadline is not None and deadline <= queued:
                error = DeadlineExpired("deadline passed while the request waited in Kafka")
                late.append(
                    results.result(req, ResultStatus.EXPIRED, {**t, "done_ms": queued}, error, trace=trace)
                )
                continue
            if verdict is Admission.NEW:
                self._received(req, trace)
            if verdict in (Admission.NEW, Admission.PENDING):
                if sid not in sent:
                    sent.add(sid)
                    by_queue.setdefault((h.queue, h.priority), []).append(h.item)
                    if spans is not None:
                        spans.append(
                            RequestSpan(
                                INTAKE_SPAN, trace, t["received_ms"], queued, req.request_id, req.model
                            )
                        )
            elif verdict is Admission.CONFLICT:
                self.reject(
                    rec, DuplicateRequestId(req.request_id), t["received_ms"], answer=False, trace=trace
                )
        for verdict_name, count in again.items():
            self.observer.redelivered(verdict_name, count)
        self.store.advance(late, deliveries=deliveries)  # over quota: never admitted, so targets go here
        self._send(by_queue)
        if spans:
            self.observer.request_spans(spans)

    def route(self, req: InferenceRequest) -> Route:
        """Where a request goes (:mod:`schemas.versions`): its pinned version, else where its model's
        rollout sends its id (a canary no live worker serves yet: the current version instead)."""
        if req.model_version is not None:
            return Route(req.model, req.model_version)
        rollout = self.rollouts.get(req.model)
        if rollout is None:
            return Route(req.model)
        route = Route(req.model, rollout.choose(scoped_id(req.tenant, req.request_id)))
        canary = route.version is not None and route.version == rollout.canary != rollout.current
        if canary and not self.served.is_available(route.served_as):
            return Route(req.model, rollout.current)
        return route

    def _served_only(self, accepted: list[Accepted], routes: dict[int, Route]) -> list[Accepted]:
        """The requests for models (and versions) a live worker serves; the others are answered
        ``model_unavailable`` and dead-lettered, never admitted."""
        unserved_ids = {
            id(a.request) for a in accepted if not self.served.is_available(routes[id(a.request)].served_as)
        }
        for rec, req, t, trace in [a for a in accepted if id(a.request) in unserved_ids]:
            version = routes[id(req)].version
            unserved = ModelUnavailable(
                f"no live worker serves model {req.model!r}"
                if version is None
                else f"no live worker serves version {version!r} of model {req.model!r}"
            )
            failed = results.result(
                req, ResultStatus.FAILED, {**t, "done_ms": now_ms()}, unserved, trace=trace
            )
            # over the API's ``queued`` record of this content too: it must not stay queued for ever
            targets = targets_json(req, self.s)
            sid = scoped_id(req.tenant, req.request_id)
            digests = [request_digest(req), bytes_digest(rec.value or b"")]
            self.store.fail_owned([(digests, failed)], {sid: targets} if targets else None)
            self.reject(rec, unserved, t["received_ms"], answer=False, trace=trace)
        return [a for a in accepted if id(a.request) not in unserved_ids]

    def _received(self, req: InferenceRequest, trace: TraceContext) -> None:
        """A new request admitted: counted, and (opt-in, masked: never the text itself) logged."""
        self.observer.admitted(req.model)
        if self.s.log_inputs:
            log.info(
                "received %s",
                req.request_id,
                extra={
                    "event.dataset": "inferq.intake",
                    "inferq.stage": "received",
                    "inferq.request_id": req.request_id,
                    "inferq.input_preview": mask_text(req.texts()[0]),
                    "trace.id": trace.trace_id,
                    "span.id": trace.span_id,
                },
            )

    def _send(self, by_queue: dict[tuple[str, int], list[dict[str, Any]]]) -> None:
        """Send the admitted items to Celery, high priority first, at most
        ``INFERQ_TRANSPORT_BATCH_SIZE`` requests per message."""
        n = self.s.transport_batch_size
        for (queue, priority), items in sorted(by_queue.items(), key=lambda kv: kv[0][1]):
            for i in range(0, len(items), n):
                chunk = items[i : i + n]
                # the message's shown arguments (Flower, worker logs): a count, not a repr of every
                # item, which cost as much as sending it and would show the inputs themselves
                self.celery.send_task(
                    TASK_INFER,
                    args=[chunk],
                    queue=queue,
                    priority=priority,
                    argsrepr=f"[<{len(chunk)} requests>]",
                    kwargsrepr="{}",
                )

    def _handoff(
        self,
        rec: ConsumerRecord,
        req: InferenceRequest,
        timings: dict[str, Any],
        trace: TraceContext,
        route: Route,
    ) -> Handoff:
        """Where a request goes in Celery and the item its message carries (kept by the store
        while the request is queued, so a lost message can be sent again)."""
        # the key bounded: a key may be as large as the broker allows, beside a small request
        key = rec.key[: results.KEY_MAX_BYTES].decode("utf-8", "replace") if rec.key else None
        source = Source(topic=rec.topic, partition=rec.partition, offset=rec.offset, key=key)
        item = WorkItem(
            request=req, timings=Timings(**timings), source=source, trace=trace, version=route.version
        )
        queue = (
            model_queue(self.s, req.model)
            if route.version is None
            else version_queue(self.s, route.model, route.version)
        )
        return Handoff.of(queue, CELERY_PRIORITY[req.priority], item)


def _admitted(rec: ConsumerRecord) -> bool:
    """Whether the API admitted this record's request before publishing it (its header says so)."""
    return any(k == ADMITTED_HEADER for k, _ in rec.headers or ())
