"""Writes: moving a request's record forward (start, progress, end), cancelling, expiring, forgetting.

Status only moves forward (queued → running → done|failed|expired|cancelled) and a terminal result
is never overwritten, so a redelivered Celery message or a replayed Kafka record cannot make a
result flicker or appear twice. Each transition that makes a result terminal also publishes the
request id on the ``done`` channel (:class:`workers.store.reads.DoneWatcher`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from schemas.errors import Cancelled, DeadlineExpired
from schemas.messages import InferenceResult, ResultStatus, now_ms
from schemas.naming import (
    deadlines_key,
    inflight_key,
    outbox_key,
    outbox_refused_key,
    pending_key,
    result_key,
    scoped_id,
    tenant_key_prefix,
    tenant_keys,
)
from schemas.results import result_json as results_json
from workers.store.base import as_text
from workers.store.reads import Reads

ADVANCE_CHUNK = 256  # results per ADVANCE call: a batch is one call; a longer list, a few


class Cancellation(NamedTuple):
    """What a cancel call found: the status now, the result now, and whether a running generation
    was asked to stop (it then ends ``cancelled`` with its text so far, within one sync interval)."""

    status: ResultStatus | None
    result: InferenceResult | None
    stopping: bool = False


class Writes(Reads):
    """Every transition of a request's record after its admission; one round trip per batch."""

    def advance(
        self,
        results: Iterable[InferenceResult],
        *,
        only_if_absent: bool = False,
        deliveries: dict[str, str] | None = None,
    ) -> list[bool]:
        """Move each result forward; False where the store already held a later (or any) state.

        ``deliveries`` (scoped id → delivery targets JSON) are recorded only where this write
        creates the record (a request answered without being admitted: over its quota, refused);
        an admitted request keeps the targets it was admitted with."""
        return [bool(n) for n in self._advance_many(results, only_if_absent, deliveries)]

    def start(self, results: Iterable[InferenceResult]) -> list[int]:
        """Mark ``running`` results; each one's attempt number (1 = first start), 0 where refused."""
        return self._advance_many(results, False)

    def _advance_many(
        self,
        results: Iterable[InferenceResult],
        only_if_absent: bool,
        deliveries: dict[str, str] | None = None,
    ) -> list[int]:
        """One ADVANCE call per :data:`ADVANCE_CHUNK` results (a batch is one round trip, with no
        per-request command; a long list is cut so one script never holds Redis for long)."""
        sent = list(results)
        if not sent:
            return []
        now = repr(now_ms())
        shared = [
            self.inflight_key,
            deadlines_key(self._s),
            pending_key(self._s),
            outbox_key(self._s),
            outbox_refused_key(self._s),
        ]
        head: list[str | int] = [
            self._s.result_ttl_s,
            int(only_if_absent),
            self.channel,
            now,
            self._s.outbox_max_entries,
        ]
        verdicts: list[int] = []
        for at in range(0, len(sent), ADVANCE_CHUNK):
            keys, args = list(shared), list(head)
            for result in sent[at : at + ADVANCE_CHUNK]:
                sid = scoped_id(result.tenant, result.request_id)
                keys += [
                    result_key(self._s, sid),
                    inflight_key(self._s, result.model or ""),
                    *tenant_keys(self._s, result.tenant),
                ]
                args += [
                    result.status.value,
                    results_json(result),
                    sid,
                    int(self._s.tenant_quota(result.tenant)[1] > 0),
                    deliveries.get(sid, "") if deliveries else "",
                ]
            verdicts += [int(v) for v in self._advance(keys=keys, args=args)]
        written = []
        for r, n in zip(sent, verdicts, strict=True):
            if not r.status.terminal:
                continue
            if n:
                written.append(r)
            elif not only_if_absent:
                self.observer.result_refused(r)
        self.observer.results_written(written)
        return verdicts

    def fail_owned(
        self,
        items: Sequence[tuple[Sequence[str], InferenceResult]],
        deliveries: dict[str, str] | None = None,
    ) -> list[bool]:
        """Write each ``failed`` result (the intake's answer to a record it dead-lettered) where its
        id is unknown, or over a ``queued`` record whose digest is one of the given ones (the same
        content: the API admits a request before it publishes exactly its wire JSON), releasing
        its in-flight count like any end (:meth:`advance`); refused otherwise. True where written.

        The read and the write are two steps: a queued record of that content has no hand-off
        (the intake refused the record, so no worker can hold it), so nothing moves it between.
        ``deliveries`` (scoped id → targets JSON) go with a result written where the id was unknown
        (a queued record keeps the targets it was admitted with)."""
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
            "absent": self.advance(absent, only_if_absent=True, deliveries=deliveries) if absent else [],
            "owned": self.advance(owned) if owned else [],
        }
        return [kind != "refused" and done[kind][n] for kind, n in where]

    def expire_due(self, now: float | None = None, limit: int = 1_000) -> list[InferenceResult]:
        """End as ``expired`` every queued request whose deadline passed; returns their results."""
        error = DeadlineExpired("deadline passed before the request reached the model").info()
        bodies = self._expire_due(
            keys=[
                deadlines_key(self._s),
                self.inflight_key,
                pending_key(self._s),
                outbox_key(self._s),
                outbox_refused_key(self._s),
            ],
            args=[
                repr(now_ms() if now is None else now),
                result_key(self._s, ""),
                inflight_key(self._s, ""),
                self.channel,
                error.model_dump_json(),
                limit,
                tenant_key_prefix(self._s),
                self._s.outbox_max_entries,
            ],
        )
        results = [InferenceResult.model_validate_json(b) for b in bodies]
        self.observer.results_written(results)
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
                keys=[
                    *self._keys(sid, current.model, tenant),
                    outbox_key(self._s),
                    outbox_refused_key(self._s),
                ],
                args=[
                    cancelled.model_dump_json(),
                    self.channel,
                    sid,
                    repr(now_ms()),
                    int(self._s.tenant_quota(tenant)[1] > 0),
                    self._s.outbox_max_entries,
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

    def forget(self, request_id: str, tenant: str | None = None) -> None:
        """Delete a request's record (only for one that never reached Kafka), and its place in flight."""
        current = self.get(request_id, tenant)
        sid = scoped_id(tenant, request_id)
        pipe = self.client.pipeline(transaction=True)
        pipe.delete(result_key(self._s, sid))
        for key in self._keys(sid, current.model if current else None, tenant)[1:6]:
            pipe.zrem(key, sid)
        pipe.execute()
