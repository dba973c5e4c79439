"""Admission and quotas: recording a request the intake (or the API) just read, and counting what
is in flight, per model and per tenant.

ADMIT records a request unless its id is known, and enforces each tenant's limits (requests in
flight, stored result bytes) atomically on the server, so concurrent intakes and API replicas cannot
overshoot them (:mod:`workers.store.scripts`).
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum

from schemas.errors import QuotaExceeded
from schemas.messages import InferenceResult, now_ms
from schemas.naming import inflight_key, scoped_id, tenant_keys
from schemas.settings import Settings
from schemas.work import Handoff
from workers.store.base import StoreBase, as_text

# requests per ADMIT call (the script admits many; bounded so one call never holds Redis for long),
# and the KEYS and ARGV each one takes (workers/store/lua/admit.lua)
ADMIT_CHUNK, ADMIT_KEYS, ADMIT_ARGS = 256, 8, 9


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


class Admissions(StoreBase):
    """Admitting requests and counting the ones in flight."""

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
        now = repr(now_ms())
        keys: list[str] = []
        args: list[str | int | float] = []
        for digest, queued in items:
            sid = scoped_id(queued.tenant, queued.request_id)
            deadline = deadlines.get(sid) if deadlines else None
            handoff = handoffs.get(sid) if handoffs else None
            max_inflight, max_bytes = self._s.tenant_quota(queued.tenant)
            keys += self._keys(sid, queued.model, queued.tenant)
            args += [
                digest,
                queued.model_dump_json(),
                self._s.result_ttl_s,
                "" if deadline is None else repr(deadline),
                sid,
                "" if handoff is None else handoff.model_dump_json(),
                now,
                max_inflight,
                max_bytes,
            ]
        if not items:
            return []
        # one script call per ADMIT_CHUNK requests (the script loops over them), all in one round trip
        pipe = self.client.pipeline(transaction=False)
        for i in range(0, len(items), ADMIT_CHUNK):
            self._admit(
                keys=keys[i * ADMIT_KEYS : (i + ADMIT_CHUNK) * ADMIT_KEYS],
                args=args[i * ADMIT_ARGS : (i + ADMIT_CHUNK) * ADMIT_ARGS],
                client=pipe,
            )
        return [Admission(as_text(v)) for chunk in pipe.execute() for v in chunk]

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
