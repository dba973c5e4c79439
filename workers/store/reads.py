"""Reads: a request's result, many at once, and the ``done`` channel that wakes a waiting client."""

from __future__ import annotations

from collections.abc import Sequence

from schemas.messages import InferenceResult
from schemas.naming import done_ids, result_key, scoped_id
from workers.store.base import StoreBase

# messages read by one :meth:`DoneWatcher.finished` at most: a writer publishes one per batch, so a
# drain this long is far past any real burst, while a flood on the channel (anyone with Redis access
# can publish) returns to the caller, who can then check its own deadline, instead of holding it
DRAIN_MAX_MESSAGES = 1_000
DRAIN_MAX_IDS = 100_000  # nor more ids than this (plus one message's), what a flood of big messages holds


class Reads(StoreBase):
    """Reading results by (unscoped) request id, in one tenant's namespace."""

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

    def __init__(self, store: StoreBase) -> None:
        self._pubsub = store.client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(store.channel)
        self._pubsub.get_message(timeout=1.0)  # the confirmation: subscribed on the server from here

    def finished(self, timeout_s: float) -> list[str]:
        """Scoped ids (:func:`schemas.naming.scoped_id`) announced since the last call, one entry per
        announcement (a batch's message gives each of its ids): waits up to ``timeout_s`` for the
        first message, then drains what is already there, at most :data:`DRAIN_MAX_MESSAGES`
        messages or :data:`DRAIN_MAX_IDS` ids (the rest are read by the next call)."""
        ids: list[str] = []
        message = self._pubsub.get_message(timeout=max(0.0, timeout_s))
        read = 0
        while message is not None:
            ids.extend(done_ids(message["data"]))  # one message per batch (or one id, older writers)
            read += 1
            if read >= DRAIN_MAX_MESSAGES or len(ids) >= DRAIN_MAX_IDS:
                break
            message = self._pubsub.get_message(timeout=0)
        return ids

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> DoneWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
