"""The Redis result store: one hash per request, moved forward only, written idempotently.

Status only moves forward (queued → running → done|failed|expired|cancelled) and a terminal result
is never overwritten, so a redelivered Celery message or a replayed Kafka record cannot make a
result flicker or appear twice. The transitions are Lua scripts, atomic on the server
(:mod:`workers.store.scripts`, source in ``lua/``); each one that makes a result terminal also
publishes the request id on the ``done`` channel, so waiting clients wake at once instead of
polling. Key layout is in :mod:`schemas.naming`.

Requests are stored under their scoped id (:func:`schemas.naming.scoped_id`): the same request id
sent by two tenants is two requests, and reading, cancelling or forgetting one takes its tenant.
ADMIT also enforces each tenant's limits (requests in flight, stored result bytes), atomically.

:class:`ResultStore` is the one object callers use; it is put together from one module per concept:
admission and quotas (:mod:`workers.store.admission`), writes (:mod:`workers.store.writes`), reads
and the ``done`` channel (:mod:`workers.store.reads`), lost hand-offs (:mod:`workers.store.handoffs`),
content digests (:mod:`workers.store.digests`).
"""

from __future__ import annotations

from schemas.connections import redis_client
from schemas.observer import Observer
from schemas.settings import Settings
from workers.store.admission import Admission, Admissions, quota_error
from workers.store.base import TRANSIENT_ERRORS, as_text
from workers.store.digests import bytes_digest, request_digest
from workers.store.handoffs import Handoffs
from workers.store.reads import DoneWatcher
from workers.store.writes import Cancellation, Writes


class ResultStore(Admissions, Writes, Handoffs):
    """Writes and reads results; every write is one round trip for a whole batch."""

    @classmethod
    def from_settings(cls, settings: Settings, observer: Observer | None = None) -> ResultStore:
        return cls(redis_client(settings), settings, observer)


__all__ = [
    "TRANSIENT_ERRORS",
    "Admission",
    "Cancellation",
    "DoneWatcher",
    "ResultStore",
    "as_text",
    "bytes_digest",
    "quota_error",
    "request_digest",
]
