"""Model versions in Redis: each model's rollout (where unpinned requests go) and per-version counts.

The rollout (:class:`schemas.versions.Rollout`, one hash per model) is written by ``inferq-ops
rollout`` and read by every intake through :class:`Rollouts`, which keeps what it read for at most
:data:`CACHE_S`: a change reaches every intake within that, with no restart. Requests already
handed off are not moved: each went to its version's queue (kept in its hand-off, so a lost message
is sent to the same one) and is served there.

Workers count the results they write per model, minute and version (:class:`VersionCounts`), so a
canary can be judged (``inferq-ops rollout status``, ``watch``) from one cheap source shared by
every worker and read without Prometheus.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import redis
from pydantic import ValidationError

from schemas.catalog import CATALOG
from schemas.messages import InferenceResult, ResultStatus
from schemas.naming import rollout_key, version_stats_key
from schemas.observer import Observer
from schemas.settings import Settings
from schemas.versions import Rollout, version_of
from workers.store.base import as_text

log = logging.getLogger(__name__)

CACHE_S = 1.0  # an intake reads the rollouts at most this often
STATS_TTL_S = 7_200  # per-minute counts are kept this long
# latency buckets of the per-version counts (ms, upper bounds): enough for a p99 to the bucket
LATENCY_BUCKETS_MS = (10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000)


def read_rollouts(client: redis.Redis, settings: Settings, models: Iterable[str]) -> dict[str, Rollout]:
    """The rollouts set for ``models`` (one round trip); a model with none (or an unreadable one,
    logged) is left out: its unpinned requests go to its default queue."""
    names = list(models)
    pipe = client.pipeline(transaction=False)
    for model in names:
        pipe.hgetall(rollout_key(settings, model))
    found: dict[str, Rollout] = {}
    for model, raw in zip(names, pipe.execute(), strict=True):
        if not raw:
            continue
        try:
            found[model] = Rollout.from_fields({as_text(k): as_text(v) for k, v in raw.items()})
        except (ValidationError, ValueError):
            log.error("rollout of %s in Redis cannot be read (%r); routing to its default queue", model, raw)
    return found


def write_rollout(client: redis.Redis, settings: Settings, model: str, rollout: Rollout | None) -> None:
    """Set a model's rollout (None: remove it, back to the default queue), in one atomic write."""
    key = rollout_key(settings, model)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    if rollout is not None:
        pipe.hset(key, mapping=rollout.fields())  # type: ignore[arg-type]
    pipe.execute()


def update_rollout(
    client: redis.Redis,
    settings: Settings,
    model: str,
    change: Callable[[Rollout | None], Rollout | None],
) -> Rollout | None:
    """Read a model's rollout, apply ``change`` (which may raise to refuse) and write the outcome,
    all or nothing: a concurrent change in between makes it read and apply again (WATCH)."""
    key = rollout_key(settings, model)
    with client.pipeline(transaction=True) as pipe:
        while True:
            try:
                pipe.watch(key)
                raw = pipe.hgetall(key)
                old = Rollout.from_fields({as_text(k): as_text(v) for k, v in raw.items()}) if raw else None
                new = change(old)
                pipe.multi()
                pipe.delete(key)
                if new is not None:
                    pipe.hset(key, mapping=new.fields())  # type: ignore[arg-type]
                pipe.execute()
                return new
            except redis.WatchError:
                continue


class Rollouts:
    """A cached view of every catalogue model's rollout (refreshed at most every :data:`CACHE_S`)."""

    def __init__(
        self, client: redis.Redis, settings: Settings, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._s = settings
        self._clock = clock
        self._read_s = float("-inf")
        self._rollouts: dict[str, Rollout] = {}

    def get(self, model: str) -> Rollout | None:
        now = self._clock()
        if now - self._read_s >= CACHE_S:
            self._rollouts = read_rollouts(self._client, self._s, CATALOG)
            self._read_s = now
        return self._rollouts.get(model)


@dataclass
class MinuteCounts:
    """One version's results over some minutes: ok, failed, and latency by bucket (ms)."""

    ok: int = 0
    failed: int = 0
    buckets: Counter[int] = field(default_factory=Counter)  # upper bound in ms (0 = above the last)

    @property
    def total(self) -> int:
        return self.ok + self.failed

    @property
    def error_rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def quantile_ms(self, q: float) -> float:
        """The upper bound of the bucket holding the ``q`` quantile (inf: above the last bucket)."""
        counted = sum(self.buckets.values())
        if not counted:
            return 0.0
        seen = 0
        for bound in (*LATENCY_BUCKETS_MS, 0):
            seen += self.buckets.get(bound, 0)
            if seen >= q * counted:
                return float(bound) if bound else float("inf")
        return float("inf")


_SENDERS_DOING = frozenset({ResultStatus.EXPIRED, ResultStatus.CANCELLED})  # not the version's fault


def _bucket(ms: float) -> int:
    return next((b for b in LATENCY_BUCKETS_MS if ms <= b), 0)


class VersionCounts(Observer):
    """Counts each result a worker writes under its model, minute and version (one pipelined
    HINCRBY per field per batch). Failures only count results that carry a version (the model
    ran, or was about to); a request refused before reaching a version has none. Expired and
    cancelled results are not counted at all: their sender chose the deadline or the cancel, so
    counted as errors they would let any tenant make a healthy canary look broken (and ``rollout
    watch`` roll it back for everyone) by pinning it with requests it cancels or lets expire.
    Results of pinned requests are not counted either: a canary is judged on the unpinned traffic
    the rollout sends it, or a tenant pinning it could bury its errors under its own successes (a
    broken canary promoted) or queue slow requests on it to push its p99 up (a healthy one rolled
    back)."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._client = client
        self._s = settings

    def results_written(self, results: Sequence[InferenceResult]) -> None:
        minute = int(time.time() // 60)
        tally: Counter[tuple[str, str]] = Counter()
        for r in results:
            version = version_of(r.model_version)
            if r.model is None or version is None or r.status in _SENDERS_DOING or r.pinned:
                continue
            ok = r.status is ResultStatus.DONE
            tally[(r.model, f"{version}|{'ok' if ok else 'failed'}")] += 1
            t = r.timings
            if ok and t.done_ms is not None and t.received_ms is not None:
                tally[(r.model, f"{version}|le{_bucket(t.done_ms - t.received_ms)}")] += 1
        if not tally:
            return
        pipe = self._client.pipeline(transaction=False)
        for model in {m for m, _ in tally}:
            key = version_stats_key(self._s, model, minute)
            for (m, fld), n in tally.items():
                if m == model:
                    pipe.hincrby(key, fld, n)
            pipe.expire(key, STATS_TTL_S)
        pipe.execute()

    def result_written(self, result: InferenceResult) -> None:
        self.results_written([result])


def read_counts(
    client: redis.Redis, settings: Settings, model: str, minutes: int, now_s: float | None = None
) -> dict[str, MinuteCounts]:
    """A model's results by version over the last ``minutes`` minutes (the current one included)."""
    this = int((time.time() if now_s is None else now_s) // 60)
    pipe = client.pipeline(transaction=False)
    for minute in range(this - minutes + 1, this + 1):
        pipe.hgetall(version_stats_key(settings, model, minute))
    counts: dict[str, MinuteCounts] = {}
    for raw in pipe.execute():
        for k, v in raw.items():
            version, _, kind = as_text(k).rpartition("|")
            c = counts.setdefault(version, MinuteCounts())
            if kind == "ok":
                c.ok += int(v)
            elif kind == "failed":
                c.failed += int(v)
            elif kind.startswith("le") and kind[2:].isdigit():
                c.buckets[int(kind[2:])] += int(v)
    return counts
