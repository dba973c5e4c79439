"""Admission and quotas: recording a request the intake (or the API) just read, and counting what
is in flight, per model and per tenant.

ADMIT records a request unless its id is known, and enforces each tenant's limits (requests in
flight, stored result bytes) atomically on the server, so concurrent intakes and API replicas cannot
overshoot them (:mod:`workers.store.scripts`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import Enum

from schemas.errors import QuotaExceeded
from schemas.messages import InferenceResult, now_ms
from schemas.naming import deadlines_key, inflight_key, pending_key, result_key, scoped_id, tenant_keys
from schemas.settings import Settings
from schemas.work import Handoff
from workers.store.base import StoreBase

# requests per ADMIT call (the script admits many; bounded so one call never holds Redis for long)
ADMIT_CHUNK = 256


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


# the script's answers as the client reads them (bytes, or text with decode_responses)
_VERDICTS: dict[bytes | str, Admission] = {
    **{a.value: a for a in Admission},
    **{a.value.encode(): a for a in Admission},
}


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
        deliveries: dict[str, str] | None = None,
    ) -> list[Admission]:
        """Record each (digest, queued result) unless the id is known; say what each one is.

        ``deadlines`` (scoped id → epoch ms) enrols requests in the deadline sweep; ``handoffs``
        (scoped id → its Celery queue, priority and message item) are kept while the request is
        queued, so :meth:`claim_stale` can send a lost one again; ``deliveries`` (scoped id → its
        delivery targets JSON, :func:`schemas.replies.targets_json`) are kept with a new record, so
        the script that makes it terminal puts it in the outbox. A new request over its tenant's
        limits is not recorded (``QUOTA_*``: answer it with :func:`quota_error`).
        """
        if not items:
            return []
        now = repr(now_ms())
        calls = [
            self._admit_call(items[i : i + ADMIT_CHUNK], now, deadlines, handoffs, deliveries)
            for i in range(0, len(items), ADMIT_CHUNK)
        ]
        if len(calls) == 1:  # EVALSHA alone: a pipeline asks SCRIPT EXISTS first, one more round trip
            return [_VERDICTS[v] for v in self._admit(keys=calls[0][0], args=calls[0][1])]
        # one script call per ADMIT_CHUNK requests (the script loops over them), all in one round trip
        pipe = self.client.pipeline(transaction=False)
        for keys, args in calls:
            self._admit(keys=keys, args=args, client=pipe)
        return [_VERDICTS[v] for chunk in pipe.execute() for v in chunk]

    def _admit_call(
        self,
        items: Sequence[tuple[str, InferenceResult]],
        now: str,
        deadlines: dict[str, float] | None,
        handoffs: dict[str, Handoff] | None,
        deliveries: dict[str, str] | None = None,
    ) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of one ADMIT call (``workers/store/lua/admit.lua``): each distinct key once,
        and every request's values in one JSON document, so the cost of a call grows by one key and
        one JSON row per request, not by 17 arguments."""
        keys = [self.inflight_key, deadlines_key(self._s), pending_key(self._s)]
        models: dict[str, int] = {}  # model → index of its in-flight key (Lua counts from 1)
        tenants: dict[str | None, tuple[int, int, int]] = {}  # → its two limits, index of its first key
        results: list[str] = []
        rows: list[list[str | int]] = []
        for digest, queued in items:
            sid = scoped_id(queued.tenant, queued.request_id)
            deadline = deadlines.get(sid) if deadlines else None
            handoff = handoffs.get(sid) if handoffs else None
            model = queued.model or ""
            if model not in models:
                models[model] = len(keys) + 1
                keys.append(inflight_key(self._s, model))
            tenant = tenants.get(queued.tenant)
            if tenant is None:  # its three keys, consecutive
                tenant = tenants[queued.tenant] = (*self._s.tenant_quota(queued.tenant), len(keys) + 1)
                keys += tenant_keys(self._s, queued.tenant)
            rows.append(
                [
                    digest,
                    queued.model_dump_json(),
                    "" if deadline is None else repr(deadline),
                    sid,
                    "" if handoff is None else handoff.model_dump_json(),
                    *tenant,
                    models[model],
                    "" if handoff is None else (handoff.item.get("version") or ""),
                    deliveries.get(sid, "") if deliveries else "",
                ]
            )
            results.append(result_key(self._s, sid))
        keys += results
        payload = {"now": now, "ttl_s": str(self._s.result_ttl_s), "requests": rows}
        return keys, [json.dumps(payload, separators=(",", ":"), ensure_ascii=False)]

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
