"""The Redis result store: one hash per request, moved forward only, written idempotently.

Status only moves forward (queued → running → done|failed|expired|cancelled) and a terminal result
is never overwritten, so a redelivered Celery message or a replayed Kafka record cannot make a
result flicker or appear twice. The transitions are Lua scripts, atomic on the server; each one
that makes a result terminal also publishes the request id on the ``done`` channel, so waiting
clients wake at once instead of polling. Key layout is in :mod:`schemas.naming`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Sequence
from enum import Enum
from typing import Any

import redis

from schemas.errors import Cancelled
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus, Timings, now_ms
from schemas.naming import done_channel, inflight_key, result_key
from schemas.settings import Settings

log = logging.getLogger(__name__)

# KEYS[1] result key, KEYS[2] in-flight counter; ARGV: digest, queued body, ttl_s
_ADMIT = """
local cur = redis.call('HGET', KEYS[1], 'digest')
if not cur then
  local st = redis.call('HGET', KEYS[1], 'status')
  if st then return 'terminal' end
  redis.call('HSET', KEYS[1], 'status', 'queued', 'body', ARGV[2], 'digest', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('INCR', KEYS[2])
  return 'new'
end
if cur ~= ARGV[1] then return 'conflict' end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' or st == 'running' then return 'pending' end
return 'terminal'
"""

# KEYS[1] result key, KEYS[2] in-flight counter; ARGV: status, body, ttl_s, only_if_absent (0|1),
# done channel, request id
_ADVANCE = """
local rank = {queued=0, running=1, done=2, failed=2, expired=2, cancelled=2}
local st = redis.call('HGET', KEYS[1], 'status')
if st then
  if ARGV[4] == '1' then return 0 end
  if rank[st] >= 2 then return 0 end
  if rank[ARGV[1]] < rank[st] then return 0 end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'body', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if rank[ARGV[1]] >= 2 then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  if st then redis.call('DECR', KEYS[2]) end
end
return 1
"""

# KEYS[1] result key, KEYS[2] in-flight counter; ARGV: cancelled body, done channel, request id.
# Only a queued request can be cancelled; otherwise the current status is returned (or 'unknown').
_CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'unknown' end
if st ~= 'queued' then return st end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'body', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
redis.call('DECR', KEYS[2])
return 'cancelled'
"""


class Admission(str, Enum):
    """What the store says about a request the intake just read."""

    NEW = "new"  # first sight: enqueue it
    PENDING = "pending"  # seen, not finished: enqueue again (the first hand-off may have been lost)
    TERMINAL = "terminal"  # already answered: drop the duplicate
    CONFLICT = "conflict"  # the id is taken by a different payload: reject


def request_digest(request: InferenceRequest) -> str:
    """Digest of a request's content, to tell a redelivery from a reuse of its id."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:32]


def queued_result(request: InferenceRequest, timings: dict[str, Any]) -> InferenceResult:
    """The first result a request has: ``queued``, with the timings known so far."""
    return InferenceResult(
        request_id=request.request_id,
        status=ResultStatus.QUEUED,
        task=request.task,
        model=request.model,
        tenant=request.tenant,
        timings=Timings(**timings),
    )


class ResultStore:
    """Writes and reads results; every write is one round trip for a whole batch."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self._s = settings
        self._admit = client.register_script(_ADMIT)
        self._advance = client.register_script(_ADVANCE)
        self._cancel = client.register_script(_CANCEL)
        self.channel = done_channel(settings)
        self.inflight_key = inflight_key(settings)
        # called with each result this process made terminal (logs, metrics); never raise into writes
        self.hooks: list[Callable[[InferenceResult], None]] = []

    @classmethod
    def from_settings(cls, settings: Settings) -> ResultStore:
        return cls(redis.Redis.from_url(settings.redis_url, health_check_interval=30), settings)

    def admit(self, items: Sequence[tuple[str, InferenceResult]]) -> list[Admission]:
        """Record each (digest, queued result) unless the id is known; say what each one is."""
        pipe = self.client.pipeline(transaction=False)
        for digest, queued in items:
            self._admit(
                keys=[result_key(self._s, queued.request_id), self.inflight_key],
                args=[digest, queued.model_dump_json(), self._s.result_ttl_s],
                client=pipe,
            )
        return [Admission(_text(v)) for v in pipe.execute()]

    def advance(self, results: Iterable[InferenceResult], *, only_if_absent: bool = False) -> list[bool]:
        """Move each result forward; False where the store already held a later (or any) state."""
        pipe = self.client.pipeline(transaction=False)
        sent: list[InferenceResult] = []
        for result in results:
            self._advance(
                keys=[result_key(self._s, result.request_id), self.inflight_key],
                args=[
                    result.status.value,
                    result.model_dump_json(),
                    self._s.result_ttl_s,
                    int(only_if_absent),
                    self.channel,
                    result.request_id,
                ],
                client=pipe,
            )
            sent.append(result)
        if not sent:
            return []
        accepted = [bool(v) for v in pipe.execute()]
        self._notify(r for r, ok in zip(sent, accepted, strict=True) if ok and r.status.terminal)
        return accepted

    def _notify(self, results: Iterable[InferenceResult]) -> None:
        for result in results:
            for hook in self.hooks:
                try:
                    hook(result)
                except Exception:  # a broken hook must not fail a write that already happened
                    log.exception("result hook %r failed", hook)

    def cancel(self, request_id: str) -> tuple[ResultStatus | None, InferenceResult | None]:
        """Cancel a request that has not started; returns (status now, result now).

        The status is ``cancelled`` when this call (or an earlier one) cancelled it, the running or
        terminal status when it was too late, and None for an unknown id.
        """
        current = self.get(request_id)
        if current is None:
            return None, None
        if current.status is not ResultStatus.QUEUED:
            return current.status, current
        cancelled = current.model_copy(
            update={
                "status": ResultStatus.CANCELLED,
                "error": Cancelled("cancelled by the client before it started").info(),
                "timings": current.timings.model_copy(update={"done_ms": now_ms()}),
            }
        )
        verdict = _text(
            self._cancel(
                keys=[result_key(self._s, request_id), self.inflight_key],
                args=[cancelled.model_dump_json(), self.channel, request_id],
            )
        )
        if verdict == "cancelled":
            self._notify([cancelled])
            return ResultStatus.CANCELLED, cancelled
        latest = self.get(request_id)  # it moved on between the read and the script
        return (latest.status if latest else None), latest

    def forget(self, request_id: str) -> None:
        """Delete a request's record (only for one that never reached Kafka)."""
        if self.client.delete(result_key(self._s, request_id)):
            self.client.decr(self.inflight_key)

    def in_flight(self) -> int:
        """Requests admitted and not yet terminal, across every process."""
        return int(self.client.get(self.inflight_key) or 0)

    def get(self, request_id: str) -> InferenceResult | None:
        body = self.client.hget(result_key(self._s, request_id), "body")
        return InferenceResult.model_validate_json(body) if body else None

    def get_many(self, request_ids: Sequence[str]) -> dict[str, InferenceResult | None]:
        pipe = self.client.pipeline(transaction=False)
        for rid in request_ids:
            pipe.hget(result_key(self._s, rid), "body")
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
        """Ids announced since the last call: waits up to ``timeout_s`` for the first, then drains."""
        ids: list[str] = []
        message = self._pubsub.get_message(timeout=max(0.0, timeout_s))
        while message is not None:
            ids.append(_text(message["data"]))
            message = self._pubsub.get_message(timeout=0)
        return ids

    def close(self) -> None:
        self._pubsub.close()

    def __enter__(self) -> DoneWatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
