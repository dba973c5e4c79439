"""What every part of the result store shares: the Redis client, the settings, the registered
scripts and the key layout of one request (:mod:`schemas.naming`, :mod:`workers.store.scripts`).

The parts (:mod:`~workers.store.admission`, :mod:`~workers.store.writes`,
:mod:`~workers.store.handoffs`, :mod:`~workers.store.reads`) are mixins over this base;
:class:`workers.store.store.ResultStore` is the one object callers use.
"""

from __future__ import annotations

import redis

from schemas.messages import InferenceRequest, InferenceResult
from schemas.naming import (
    deadlines_key,
    done_channel,
    inflight_key,
    pending_key,
    result_key,
    scoped_id,
    tenant_keys,
)
from schemas.observer import Observer, Observers
from schemas.settings import Settings
from workers.store import scripts as lua

# Redis errors worth waiting out (a restart, a network blip); the client already retried them for
# ``redis_retry_max_s`` when they reach a caller, who should then retry later, not fail a request.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError)


class StoreBase:
    """The client, the settings and the scripts; every write is one round trip for a whole batch."""

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


def as_text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
