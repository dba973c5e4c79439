"""Hand-offs kept until they are known to have arrived, so a lost one is sent again.

Two hops can lose a request: the API's publish to Kafka (a record the broker loses: :meth:`expect`
before publishing, :meth:`seen` by the intake that reads it, :meth:`unseen` finds the rest) and the
intake's message to Celery (a worker killed as it took it: ADMIT keeps the message's item with the
queued request, :meth:`claim_stale` returns the ones still queued too long).
"""

from __future__ import annotations

from collections.abc import Sequence

from schemas.messages import InferenceRequest, now_ms
from schemas.naming import pending_key, result_key, unseen_key, unseen_wire_key
from schemas.work import Handoff
from workers.store.base import StoreBase, as_text


class Handoffs(StoreBase):
    """The API's hand-offs to Kafka and the intake's to Celery, until they arrive."""

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

    def kept(self, sids: Sequence[str]) -> dict[str, Handoff]:
        """The hand-offs kept for these scoped ids (queued requests; one round trip): a record read
        again is sent where its first reading sent it (its version, :mod:`schemas.versions`)."""
        if not sids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for sid in sids:
            pipe.hget(result_key(self._s, sid), "handoff")
        found: dict[str, Handoff] = {}
        for sid, raw in zip(sids, pipe.execute(), strict=True):
            if raw:
                try:
                    found[sid] = Handoff.model_validate_json(raw)
                except ValueError:  # unreadable (a newer writer?): the fresh hand-off goes instead
                    continue
        return found

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
