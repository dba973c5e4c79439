"""Which models a live worker serves: workers advertise, the intake and the requeue sweep read.

Each worker's heartbeat puts ``<model>|<hostname>`` in ``<p>:presence`` (a sorted set) scored by
when the advertisement lapses (epoch ms, three heartbeats ahead); a worker that stops or dies
drops out by its score. A model is *served* while some advertisement is live, and *available*
while it is served, was served within ``INFERQ_UNSERVED_MODEL_GRACE_S``, or the reader itself
started less than that ago (workers may still be loading their models). Requests for a model that
is not available are answered ``model_unavailable`` instead of waiting in a queue nobody reads,
and backpressure does not count such a model, so they can never pause other models' traffic.

While the reader is young, a *version* (``<model>@<version>``) is worth admitting only when some
stored advertisement (live or lapsed, not yet forgotten) or the model's rollout names it: a
made-up version would go to a Celery queue of its own that no worker ever reads, and its messages
would stay in the broker for good.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis

from schemas.catalog import CATALOG
from schemas.messages import now_ms
from schemas.naming import presence_key
from schemas.settings import Settings
from workers.store.base import as_text
from workers.store.versions import read_rollouts

CACHE_S = 1.0  # a reading serves this long (one ZRANGEBYSCORE a second per process)


def advertise(
    client: redis.Redis, settings: Settings, hostname: str, models: Iterable[str], ttl_s: float
) -> None:
    """Say that ``hostname`` serves ``models`` for the next ``ttl_s`` seconds; forget lapsed ones
    older than the grace (nobody reads them any more)."""
    now = now_ms()
    key = presence_key(settings)
    pipe = client.pipeline(transaction=False)
    pipe.zadd(key, {f"{m}|{hostname}": now + ttl_s * 1000.0 for m in models})
    pipe.zremrangebyscore(key, "-inf", now - settings.unserved_model_grace_s * 1000.0 - 1.0)
    pipe.execute()


def withdraw(client: redis.Redis, settings: Settings, hostname: str, models: Iterable[str]) -> None:
    """``hostname`` stops serving ``models`` now (a clean shutdown: a restart, a deploy). Its
    advertisement lapses rather than vanishes, so the grace still covers its successor's start."""
    now = now_ms()
    members = {f"{m}|{hostname}": now for m in models}
    if members:
        client.zadd(presence_key(settings), members, xx=True)


class ServedModels:
    """A cached view of the models live workers serve (thread-safe enough: a race reads twice)."""

    def __init__(
        self, client: redis.Redis, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self._client = client
        self._s = settings
        self._clock = clock  # epoch seconds
        self.started_s = clock()
        self._known: frozenset[str] = frozenset()  # versions a worker or a rollout names (while young)
        self._known_read_s = float("-inf")
        self._read_s = float("-inf")
        self._lapse_ms: dict[str, float] = {}  # model → when its last live advertisement lapses

    def _refresh(self, now_s: float) -> None:
        if now_s - self._read_s < CACHE_S:
            return
        grace_ms = self._s.unserved_model_grace_s * 1000.0
        found: list[tuple[bytes | str, float]] = self._client.zrangebyscore(  # type: ignore[assignment]
            presence_key(self._s), now_s * 1000.0 - grace_ms, "+inf", withscores=True
        )
        lapse: dict[str, float] = {}
        for member, score in found:
            model = (member.decode() if isinstance(member, bytes) else member).rpartition("|")[0]
            lapse[model] = max(lapse.get(model, 0.0), float(score))
        self._lapse_ms, self._read_s = lapse, now_s

    def served(self, now_s: float | None = None) -> frozenset[str]:
        """Models some live worker advertises now."""
        now_s = self._clock() if now_s is None else now_s
        self._refresh(now_s)
        return frozenset(m for m, lapse in self._lapse_ms.items() if lapse > now_s * 1000.0)

    def available(self, now_s: float | None = None) -> frozenset[str]:
        """Models worth admitting: served now or within the grace, or every catalogue model while
        this reader is younger than the grace (the workers may be starting)."""
        now_s = self._clock() if now_s is None else now_s
        if now_s - self.started_s < self._s.unserved_model_grace_s:
            return frozenset(CATALOG)
        self._refresh(now_s)
        return frozenset(self._lapse_ms)

    def is_available(self, name: str, now_s: float | None = None) -> bool:
        """Whether ``name`` (a model, or ``<model>@<version>``: :class:`schemas.versions.Route`) is
        worth admitting, as :meth:`available` says; while this reader is younger than the grace, so
        is every version of a catalogue model (its workers may be loading it)."""
        now_s = self._clock() if now_s is None else now_s
        if now_s - self.started_s < self._s.unserved_model_grace_s:
            model, at, _ = name.partition("@")
            return model in CATALOG and (not at or name in self._known_versions(now_s))
        return name in self.available(now_s)

    def _known_versions(self, now_s: float) -> frozenset[str]:
        """``<model>@<version>`` names some stored advertisement or some model's rollout holds."""
        if now_s - self._known_read_s >= CACHE_S:
            members: list[bytes | str] = self._client.zrange(presence_key(self._s), 0, -1)  # type: ignore[assignment]
            known = {as_text(m).rpartition("|")[0] for m in members}
            for model, rollout in read_rollouts(self._client, self._s, CATALOG).items():
                known |= {f"{model}@{v}" for v in (rollout.current, rollout.canary, rollout.previous) if v}
            self._known, self._known_read_s = frozenset(known), now_s
        return self._known


__all__ = ["ServedModels", "advertise", "withdraw"]
