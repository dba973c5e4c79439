"""The Redis result store: one hash per request, moved forward only, written idempotently.

Status only moves forward (queued → running → done|failed|expired|cancelled) and a terminal result
is never overwritten, so a redelivered Celery message or a replayed Kafka record cannot make a
result flicker or appear twice. The transitions are Lua scripts, atomic on the server; each one
that makes a result terminal also publishes the request id on the ``done`` channel, so waiting
clients wake at once instead of polling. Key layout is in :mod:`schemas.naming`.

Requests are stored under their scoped id (:func:`schemas.naming.scoped_id`): the same request id
sent by two tenants is two requests, and reading, cancelling or forgetting one takes its tenant.
ADMIT also enforces each tenant's limits (requests in flight, stored result bytes), atomically.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from enum import Enum
from typing import NamedTuple

import redis

from schemas.connections import redis_client
from schemas.errors import Cancelled, DeadlineExpired, QuotaExceeded
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus, now_ms
from schemas.naming import (
    deadlines_key,
    done_channel,
    inflight_key,
    pending_key,
    result_key,
    scoped_id,
    tenant_key_prefix,
    tenant_keys,
    unseen_key,
    unseen_wire_key,
)
from schemas.observer import Observer, Observers
from schemas.settings import Settings
from schemas.work import Handoff
from workers.store import scripts as lua

log = logging.getLogger(__name__)

# Redis errors worth waiting out (a restart, a network blip); the client already retried them for
# ``redis_retry_max_s`` when they reach a caller, who should then retry later, not fail a request.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)


class Admission(str, Enum):
    """What the store says about a request the intake just read."""

    NEW = "new"  # first sight: enqueue it
    PENDING = "pending"  # seen, not finished: enqueue again (the first hand-off may have been lost)
    TERMINAL = "terminal"  # already answered: drop the duplicate
    CONFLICT = "conflict"  # the id is taken by a different payload: reject
    QUOTA_INFLIGHT = "quota_inflight"  # not recorded: its tenant has its most requests in flight
    QUOTA_BYTES = "quota_bytes"  # not recorded: its tenant holds its most bytes of results

    @property
    def over_quota(self) -> bool:
        return self in (Admission.QUOTA_INFLIGHT, Admission.QUOTA_BYTES)


def quota_error(verdict: Admission, tenant: str | None, settings: Settings) -> QuotaExceeded:
    """The error a request refused by its tenant's limit is answered with (one wording for all)."""
    inflight, size = settings.tenant_quota(tenant)
    who = f"tenant {tenant!r}" if tenant else "requests without a tenant"
    if verdict is Admission.QUOTA_INFLIGHT:
        return QuotaExceeded(f"{who} already has {inflight} requests in flight (its limit)")
    return QuotaExceeded(
        f"{who} already holds {size} bytes of stored results (its limit)",
        hint="wait for older results to expire (INFERQ_RESULT_TTL_S), or ask the operator to raise the limit",
    )


class Cancellation(NamedTuple):
    """What a cancel call found: the status now, the result now, and whether a running generation
    was asked to stop (it then ends ``cancelled`` with its text so far, within one sync interval)."""

    status: ResultStatus | None
    result: InferenceResult | None
    stopping: bool = False


def request_digest(request: InferenceRequest) -> str:
    """Digest of a request's content, to tell a redelivery from a reuse of its id."""
    return bytes_digest(request.wire_json().encode())


def bytes_digest(raw: bytes) -> str:
    """:func:`request_digest` of a record's raw bytes (equal when they are the request's wire JSON,
    which is what the API and the producer client publish)."""
    return hashlib.sha256(raw).hexdigest()[:32]


class ResultStore:
    """Writes and reads results; every write is one round trip for a whole batch."""

    def __init__(self, client: redis.Redis, settings: Settings, observer: Observer | None = None) -> None:
        self.client = client
        self._s = settings
        self._admit = client.register_script(lua.BYTES + lua.ADMIT)
        self._advance = client.register_script(lua.BYTES + lua.ADVANCE)
        self._cancel = client.register_script(lua.BYTES + lua.CANCEL)
        self._progress = client.register_script(lua.PROGRESS)
        self._expire_due = client.register_script(lua.BYTES + lua.EXPIRE_DUE)
        self._claim_stale = client.register_script(lua.CLAIM_STALE)
        self._unseen = client.register_script(lua.UNSEEN)
        self.channel = done_channel(settings)
        self.inflight_key = inflight_key(settings)
        # told of each result this process made terminal, and of each terminal result refused
        # because the request had already ended (a duplicate delivery made invisible)
        self.observer = Observers([observer] if observer else [])

    @classmethod
    def from_settings(cls, settings: Settings, observer: Observer | None = None) -> ResultStore:
        return cls(redis_client(settings), settings, observer)

    def admit(
        self,
        items: Sequence[tuple[str, InferenceResult]],
        deadlines: dict[str, float] | None = None,
        handoffs: dict[str, Handoff] | None = None,
    ) -> list[Admission]:
        """Record each (digest, queued result) unless the id is known; say what each one is.

        ``deadlines`` (scoped id → epoch ms) enrols requests in the deadline sweep; ``handoffs``
        (scoped id → its Celery queue, priority and message item) are kept while the request is
        queued, so :meth:`claim_stale` can send a lost one again. A new request over its tenant's
        limits is not recorded (``QUOTA_*``: answer it with :func:`quota_error`).
        """
        pipe = self.client.pipeline(transaction=False)
        now = repr(now_ms())
        for digest, queued in items:
            sid = scoped_id(queued.tenant, queued.request_id)
            deadline = deadlines.get(sid) if deadlines else None
            handoff = handoffs.get(sid) if handoffs else None
            max_inflight, max_bytes = self._s.tenant_quota(queued.tenant)
            self._admit(
                keys=self._keys(sid, queued.model, queued.tenant),
                args=[
                    digest,
                    queued.model_dump_json(),
                    self._s.result_ttl_s,
                    "" if deadline is None else repr(deadline),
                    sid,
                    "" if handoff is None else handoff.model_dump_json(),
                    now,
                    max_inflight,
                    max_bytes,
                ],
                client=pipe,
            )
        return [Admission(as_text(v)) for v in pipe.execute()]

    def advance(self, results: Iterable[InferenceResult], *, only_if_absent: bool = False) -> list[bool]:
        """Move each result forward; False where the store already held a later (or any) state."""
        return [bool(n) for n in self._advance_many(results, only_if_absent)]

    def start(self, results: Iterable[InferenceResult]) -> list[int]:
        """Mark ``running`` results; each one's attempt number (1 = first start), 0 where refused."""
        return self._advance_many(results, False)

    def _advance_many(self, results: Iterable[InferenceResult], only_if_absent: bool) -> list[int]:
        pipe = self.client.pipeline(transaction=False)
        sent: list[InferenceResult] = []
        now = repr(now_ms())
        for result in results:
            sid = scoped_id(result.tenant, result.request_id)
            self._advance(
                keys=self._keys(sid, result.model, result.tenant),
                args=[
                    result.status.value,
                    result.model_dump_json(),
                    self._s.result_ttl_s,
                    int(only_if_absent),
                    self.channel,
                    sid,
                    now,
                    int(self._s.tenant_quota(result.tenant)[1] > 0),
                ],
                client=pipe,
            )
            sent.append(result)
        if not sent:
            return []
        verdicts = [int(v) for v in pipe.execute()]
        terminal = [(r, n) for r, n in zip(sent, verdicts, strict=True) if r.status.terminal]
        for r, n in terminal:
            if n:
                self.observer.result_written(r)
            elif not only_if_absent:
                self.observer.result_refused(r)
        return verdicts

    def fail_owned(self, items: Sequence[tuple[Sequence[str], InferenceResult]]) -> list[bool]:
        """Write each ``failed`` result (the intake's answer to a record it dead-lettered) where its
        id is unknown, or over a ``queued`` record whose digest is one of the given ones (the same
        content: the API admits a request before it publishes exactly its wire JSON), releasing
        its in-flight count like any end (:meth:`advance`); refused otherwise. True where written.

        The read and the write are two steps: a queued record of that content has no hand-off
        (the intake refused the record, so no worker can hold it), so nothing moves it between."""
        if not items:
            return []
        pipe = self.client.pipeline(transaction=False)
        for _, failed in items:
            pipe.hmget(self._result_key(failed), "status", "digest", "body")
        found = pipe.execute()
        absent: list[InferenceResult] = []
        owned: list[InferenceResult] = []
        where: list[tuple[str, int]] = []
        for (digests, failed), (status, digest, body) in zip(items, found, strict=True):
            if status is None:
                where.append(("absent", len(absent)))
                absent.append(failed)
            elif as_text(status) == ResultStatus.QUEUED.value and digest and as_text(digest) in digests:
                queued = InferenceResult.model_validate_json(body)
                where.append(("owned", len(owned)))
                owned.append(
                    queued.model_copy(
                        update={
                            "status": ResultStatus.FAILED,
                            "error": failed.error,
                            "timings": queued.timings.model_copy(update={"done_ms": failed.timings.done_ms}),
                        }
                    )
                )
            else:
                where.append(("refused", 0))
        done = {
            "absent": self.advance(absent, only_if_absent=True) if absent else [],
            "owned": self.advance(owned) if owned else [],
        }
        return [kind != "refused" and done[kind][n] for kind, n in where]

    # -- the API's hand-offs to Kafka, until an intake reads them (a record the broker loses) --------
    def expect(self, request: InferenceRequest) -> None:
        """Keep the wire JSON of a request just admitted, about to be published, until an intake
        reads it (:meth:`seen`); :meth:`unseen` finds the ones it never read."""
        key = self._result_key(request)
        pipe = self.client.pipeline(transaction=False)
        pipe.zadd(unseen_key(self._s), {key: now_ms()})
        pipe.hset(unseen_wire_key(self._s), key, request.wire_json())
        pipe.execute()

    def seen(self, requests: Sequence[InferenceRequest]) -> None:
        """The intake read these requests from Kafka: their hand-offs are no longer needed."""
        if not requests:
            return
        keys = [self._result_key(r) for r in requests]
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(unseen_key(self._s), *keys)
        pipe.hdel(unseen_wire_key(self._s), *keys)
        pipe.execute()

    def unseen(self, older_than_s: float, limit: int = 500) -> list[tuple[str, str]]:
        """(result key, wire JSON) of requests published ``older_than_s`` ago or more that no
        intake has read and that are still queued."""
        flat = self._unseen(
            keys=[unseen_key(self._s), unseen_wire_key(self._s)],
            args=[repr(now_ms() - older_than_s * 1000.0), limit],
        )
        found = [as_text(v) for v in flat]
        return list(zip(found[0::2], found[1::2], strict=True))

    def republished(self, key: str) -> None:
        """A hand-off was published again: it counts as new (found again only if lost again)."""
        self.client.zadd(unseen_key(self._s), {key: now_ms()}, xx=True)

    def _result_key(self, result: InferenceResult | InferenceRequest) -> str:
        """The result hash of a request, in its tenant's namespace."""
        return result_key(self._s, scoped_id(result.tenant, result.request_id))

    def _keys(self, sid: str, model: str | None, tenant: str | None) -> list[str]:
        """The shared KEYS of the scripts (:mod:`workers.store.scripts`) for one scoped id."""
        return [
            result_key(self._s, sid),
            self.inflight_key,
            inflight_key(self._s, model or ""),
            deadlines_key(self._s),
            pending_key(self._s),
            *tenant_keys(self._s, tenant),
        ]

    def expire_due(self, now: float | None = None, limit: int = 1_000) -> list[InferenceResult]:
        """End as ``expired`` every queued request whose deadline passed; returns their results."""
        error = DeadlineExpired("deadline passed before the request reached the model").info()
        bodies = self._expire_due(
            keys=[deadlines_key(self._s), self.inflight_key, pending_key(self._s)],
            args=[
                repr(now_ms() if now is None else now),
                result_key(self._s, ""),
                inflight_key(self._s, ""),
                self.channel,
                error.model_dump_json(),
                limit,
                tenant_key_prefix(self._s),
            ],
        )
        results = [InferenceResult.model_validate_json(b) for b in bodies]
        for r in results:
            self.observer.result_written(r)
        return results

    def cancel(self, request_id: str, tenant: str | None = None) -> Cancellation:
        """Cancel a request that has not started, or stop a running generation.

        The status is ``cancelled`` when this call (or an earlier one) cancelled it; ``running``
        with ``stopping`` for a generation asked to stop; the running or terminal status when it
        was too late; None for an unknown id.
        """
        current = self.get(request_id, tenant)
        if current is None:
            return Cancellation(None, None)
        sid = scoped_id(tenant, request_id)
        if current.status not in (ResultStatus.QUEUED, ResultStatus.RUNNING):
            return Cancellation(current.status, current)
        cancelled = current.model_copy(
            update={
                "status": ResultStatus.CANCELLED,
                "error": Cancelled("cancelled by the client before it started").info(),
                "timings": current.timings.model_copy(update={"done_ms": now_ms()}),
            }
        )
        verdict = as_text(
            self._cancel(
                keys=self._keys(sid, current.model, tenant),
                args=[
                    cancelled.model_dump_json(),
                    self.channel,
                    sid,
                    repr(now_ms()),
                    int(self._s.tenant_quota(tenant)[1] > 0),
                ],
            )
        )
        if verdict == "cancelled":
            self.observer.result_written(cancelled)
            return Cancellation(ResultStatus.CANCELLED, cancelled)
        latest = self.get(request_id, tenant)  # it moved on between the read and the script
        return Cancellation(latest.status if latest else None, latest, stopping=verdict == "stopping")

    def progress(self, results: Sequence[InferenceResult]) -> list[str]:
        """Replace running results' bodies (a generation's text so far), one round trip.

        Returns per result its stop flag: ``""`` to go on, ``"cancel"`` when a client asked it
        to stop, ``"gone"`` when it is no longer running (ended elsewhere: stop working on it).
        """
        if not results:
            return []
        pipe = self.client.pipeline(transaction=False)
        for r in results:
            sid = scoped_id(r.tenant, r.request_id)
            self._progress(keys=[result_key(self._s, sid)], args=[r.model_dump_json()], client=pipe)
        return ["gone" if (v := as_text(flag)).startswith("!") else v for flag in pipe.execute()]

    def claim_stale(self, older_than_s: float, limit: int = 500) -> list[Handoff]:
        """Hand-offs of requests still queued ``older_than_s`` after admission, claimed (each is
        returned to one caller per period): send them to Celery again. A duplicate message is
        harmless; a lost one (a worker killed as it took it from Redis) is recovered."""
        now = now_ms()
        found = self._claim_stale(
            keys=[pending_key(self._s)],
            args=[repr(now - older_than_s * 1000.0), repr(now), result_key(self._s, ""), limit],
        )
        return [Handoff.model_validate_json(h) for h in found]

    def forget(self, request_id: str, tenant: str | None = None) -> None:
        """Delete a request's record (only for one that never reached Kafka), and its place in flight."""
        current = self.get(request_id, tenant)
        sid = scoped_id(tenant, request_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(result_key(self._s, sid))
        for key in self._keys(sid, current.model if current else None, tenant)[1:6]:
            pipe.zrem(key, sid)
        pipe.execute()

    def in_flight(self) -> int:
        """Requests admitted and not yet terminal (and not expired), across every process."""
        return int(self.client.zcount(self.inflight_key, now_ms(), "+inf"))

    def in_flight_by_model(self, models: Sequence[str]) -> dict[str, int]:
        """Requests admitted and not yet terminal, per model (one round trip)."""
        now = now_ms()
        pipe = self.client.pipeline(transaction=False)
        for m in models:
            pipe.zcount(inflight_key(self._s, m), now, "+inf")
        values = pipe.execute() if models else []
        return {m: int(v or 0) for m, v in zip(models, values, strict=True)}

    def tenant_usage(self, tenant: str | None) -> tuple[int, int]:
        """(requests in flight, stored result bytes) of ``tenant``; bytes are kept only while the
        tenant has a byte limit (``INFERQ_TENANT_MAX_RESULT_BYTES``)."""
        inflight, _, sizes = tenant_keys(self._s, tenant)
        pipe = self.client.pipeline(transaction=False)
        pipe.zcount(inflight, now_ms(), "+inf")
        pipe.hget(sizes, "~total")
        n, total = pipe.execute()
        return int(n), int(total or 0)

    def get(self, request_id: str, tenant: str | None = None) -> InferenceResult | None:
        body = self.client.hget(result_key(self._s, scoped_id(tenant, request_id)), "body")
        return InferenceResult.model_validate_json(body) if body else None

    def get_many(
        self, request_ids: Sequence[str], tenant: str | None = None
    ) -> dict[str, InferenceResult | None]:
        """Results by (unscoped) request id, all of one tenant (one round trip)."""
        pipe = self.client.pipeline(transaction=False)
        for rid in request_ids:
            pipe.hget(result_key(self._s, scoped_id(tenant, rid)), "body")
        bodies = pipe.execute()
        return {
            rid: InferenceResult.model_validate_json(b) if b else None
            for rid, b in zip(request_ids, bodies, strict=True)
        }


class DoneWatcher:
    """A subscription to the ``done`` channel: the ids of results that became terminal.

    Subscribe before reading any result you wait for, so no completion slips between the read and
    the subscription. Pub/sub is a wake-up, not the record: a missed message costs a poll.
    """

    def __init__(self, store: ResultStore) -> None:
        self._pubsub = store.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(store.channel)
        self._pubsub.get_message(timeout=1.0)  # the confirmation: subscribed on the server from here

    def finished(self, timeout_s: float) -> list[str]:
        """Scoped ids (:func:`schemas.naming.scoped_id`) announced since the last call: waits up to
        ``timeout_s`` for the first, then drains."""
        ids: list[str] = []
        message = self._pubsub.get_message(timeout=max(0.0, timeout_s))
        while message is not None:
            ids.append(as_text(message["data"]))
            message = self._pubsub.get_message(timeout=0)
        return ids

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> DoneWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
