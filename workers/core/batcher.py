"""The dynamic batcher: a thread-safe waiting pool that releases batches.

Contract (tested in ``tests/unit/workers/core/test_batcher.py`` with a fake clock):

- **When.** A batch is released when the pool is *full* — ``max_batch_size`` entries waiting, or
  their tokens reaching ``max_batch_tokens`` — or when the oldest entry has waited as long as the
  wait policy allows (:mod:`workers.core.wait_policy`), or when the pool is closing.
- **Never empty, never stuck.** A batch holds at least one entry, the anchor. An entry larger than
  the token budget on its own is released alone, so a budget smaller than one long input never loops.
- **Exactly once.** Every entry put is released exactly once; the caller maps outputs back through
  the entries it gets, so outputs match inputs one to one whatever order batches take.
- **Which.** Each batch is anchored on one entry, filled by length bucketing, then cut by cost:

  1. *Priority.* Only the highest priority class present competes for the anchor (high, then
     normal, then low); a waiting entry moves up one class every ``priority_aging_ms``, so low
     priority work is delayed, never starved.
  2. *Fairness.* The anchor is the oldest entry of the tenant that has been served the fewest
     tokens (start-time fair queuing: a tenant that was idle joins at the current minimum, it does
     not bank credit). Only tenants with entries waiting are remembered: a tenant's served tokens
     are forgotten once it has nothing waiting, so state and per-entry cost follow the *active*
     tenants, never every tenant name ever seen. Within the batch each tenant of the anchor's class
     gets a max-min fair quota of the slots; unused slots go to anyone (work-conserving), then to
     lower classes.
  3. *Buckets.* Candidates line up in order of how close their length is to the anchor's, while the
     padded size (``len(batch) × longest``) stays within ``max_batch_tokens``; this is the longest
     batch the anchor may get.
  4. *Cost.* A forward pass costs about ``per_batch_ms + per_token_ms × padded tokens`` (the
     per-text term is paid wherever a text goes, so it does not decide anything). Of the line-up,
     the batch released is the prefix (anchor first) that minimises the cost of this pass plus an
     estimate of serving what it leaves behind (of the pool's entries in its range of lengths)
     later, in batches of like lengths. So a candidate joins only if the padding it brings (its
     own, and what its length forces on the others) costs less than the per-batch overhead it
     saves; 27 short texts are not padded to 256 tokens beside 5 long ones, while a shallow pool of
     similar lengths still goes as one batch. Only the ratio ``per_batch_ms / per_token_ms`` (the
     overhead in padded tokens) matters: on a GPU, where padding is nearly free, batches fill as
     before; on a CPU, where every padded token costs, they split by length. The rates come from
     the ``cost`` callable (the engine's :class:`~workers.core.wait_policy.CostModel`, seeded by
     timed passes at start and refitted on every batch), else ``BatchPolicy.overhead_tokens``.

  The anchor is always the oldest of its tenant in the top class and is always in the batch, so
  every entry is eventually chosen; cutting a line-up to a prefix keeps the quota order (quota
  slots come first) and every bound (size, tokens).

The pool is pure logic around a clock; :meth:`Batcher.poll` makes one decision at a given time and
:meth:`Batcher.take` blocks on a condition variable until a decision releases something.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from workers.core.wait_policy import FixedWait, WaitPolicy

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32  # entries (texts)
    max_batch_tokens: int = 8_192  # padded tokens: len(batch) × longest entry
    max_wait_ms: float = 10.0  # the fixed wait, and the cap of the adaptive one
    priority_aging_ms: float = 1_000.0  # a waiting entry moves up one class per this; 0 = never
    # a forward pass's fixed cost in padded tokens (per_batch_ms ÷ per_token_ms), used until measured
    # rates are there; inf = padding is free (fill every batch, the bucketing alone)
    overhead_tokens: float = 64.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_batch_tokens < 1 or self.max_wait_ms < 0:
            raise ValueError(f"batch policy needs size ≥ 1, tokens ≥ 1, wait ≥ 0; got {self}")
        if self.priority_aging_ms < 0:
            raise ValueError(f"priority_aging_ms must be ≥ 0; got {self.priority_aging_ms}")
        if not self.overhead_tokens >= 0:
            raise ValueError(f"overhead_tokens must be ≥ 0 (or inf); got {self.overhead_tokens}")


@dataclass(eq=False)
class Entry(Generic[T]):
    item: T
    tokens: int
    arrival_s: float
    priority: int = 1  # 0 = high, 1 = normal, 2 = low
    tenant: str = ""
    seq: int = 0


def padded_tokens(lengths: Sequence[int]) -> int:
    """Tokens a forward pass computes for inputs of these lengths, padding included."""
    return len(lengths) * max(lengths) if lengths else 0


def padding_waste(lengths: Sequence[int]) -> float:
    """Share of a batch's computed tokens that are padding (0 = none)."""
    padded = padded_tokens(lengths)
    return 1.0 - sum(lengths) / padded if padded else 0.0


# (ms per padded token, ms per forward pass) of the model served, or None while unknown
CostRates = Callable[[], tuple[float, float] | None]


def overhead_in_tokens(rates: tuple[float, float] | None, default: float) -> float:
    """A pass's fixed cost in padded tokens: what one more batch costs against one more padded token."""
    if rates is None:
        return default
    per_token_ms, per_batch_ms = rates
    if per_token_ms <= 0:
        return math.inf  # padding costs nothing measurable: fewer, fuller batches win
    return max(0.0, per_batch_ms) / per_token_ms


def cheapest_prefix(walk: Sequence[int], pool: Sequence[int], slots: int, overhead_tokens: float) -> int:
    """How many of ``walk`` (a batch's line-up of token lengths, anchor first) to release.

    ``pool`` holds the lengths of every entry waiting, the walk's included. For each prefix the
    cost is this pass (``overhead + len × longest``, in padded tokens) plus what the entries left
    behind in the walk's range of lengths would cost later (:func:`later_cost`); entries outside
    that range are served the same whichever prefix goes. Returns the length of the cheapest
    prefix (≥ 1); on a tie the longer one, so equal lengths never split.
    """
    m = len(walk)
    if m <= 1 or math.isinf(overhead_tokens) or min(walk) == max(walk):
        return m  # nothing to cut, padding is free, or there is no padding to save
    lo, hi = min(walk), max(walk)
    rest = sorted((n for n in pool if lo <= n <= hi), reverse=True)  # left behind by the prefix
    best_total, best_m, longest = math.inf, m, 0
    for k in range(1, m + 1):
        longest = max(longest, walk[k - 1])
        rest.remove(walk[k - 1])
        total = overhead_tokens + k * longest + later_cost(rest, slots, overhead_tokens)
        if total <= best_total + 1e-9 * max(1.0, best_total):
            best_total, best_m = min(total, best_total), k
    return best_m


def later_cost(descending: Sequence[int], slots: int, overhead_tokens: float) -> float:
    """Padded tokens plus overheads of serving these lengths (longest first) in later batches of
    like lengths: an entry joins the batch before it while that batch has room and padding it to
    the batch's longest costs no more than a pass of its own."""
    total, size, top = 0.0, 0, 0
    for n in descending:
        if size and size < slots and top - n <= overhead_tokens:
            size += 1
            total += top
        else:
            size, top = 1, n
            total += overhead_tokens + n
    return total


def fair_quota(demand: Counter[str], slots: int) -> dict[str, int]:
    """Max-min fair split of ``slots`` between tenants wanting ``demand[t]`` each (water-filling)."""
    quota = {t: 0 for t in demand}
    left = slots
    wanting = sorted(demand, key=lambda t: demand[t])
    while wanting and left > 0:
        share = max(1, left // len(wanting))
        for t in list(wanting):
            give = min(share, demand[t] - quota[t], left)
            quota[t] += give
            left -= give
            if quota[t] >= demand[t]:
                wanting.remove(t)
            if left == 0:
                break
    return quota


class Batcher(Generic[T]):
    """A waiting pool that hands out batches by :class:`BatchPolicy` and a :class:`WaitPolicy`."""

    def __init__(
        self,
        policy: BatchPolicy,
        wait: WaitPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        cost: CostRates | None = None,
    ) -> None:
        """``cost`` gives the model's measured rates (see :data:`CostRates`); without it, or while
        it answers None, ``policy.overhead_tokens`` decides where a batch is cut."""
        self.policy = policy
        self.wait = wait or FixedWait(policy.max_wait_ms)
        self._clock = clock
        self._cost = cost
        self._pool: dict[int, Entry[T]] = {}  # insertion order = arrival order
        self._tokens = 0
        self._seq = itertools.count()
        # per *active* tenant (≥ 1 entry waiting): tokens served (virtual time) and entries waiting;
        # both forget a tenant when its last entry leaves, so they stay O(active tenants)
        self._served: dict[str, float] = {}
        self._waiting: dict[str, int] = {}
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._pool)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, tokens: int, *, priority: int = 1, tenant: str = "") -> None:
        """Add one entry of ``tokens`` tokens (≥ 1) to the pool."""
        self.put_many([(item, tokens, priority, tenant)])

    def put_many(self, entries: Iterable[tuple[T, int, int, str]]) -> None:
        """Add entries ``(item, tokens, priority, tenant)`` as :meth:`put` would, under one lock and
        with one wake-up of the taking thread: a Celery message's requests arrive together, and a
        wake-up per entry would re-run the batch decision (O(pool)) once per request."""
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed; no new work is accepted")
            now = self._clock()
            added = False
            for item, tokens, priority, tenant in entries:
                if tenant not in self._waiting:  # (re)activated tenant: start at the current minimum
                    self._served[tenant] = min(self._served.values(), default=0.0)
                    self._waiting[tenant] = 0
                self._waiting[tenant] += 1
                seq = next(self._seq)
                self._pool[seq] = Entry(item, max(1, tokens), now, priority, tenant, seq)
                self._tokens += max(1, tokens)
                self.wait.on_arrival(now)
                added = True
            if added:
                self._cond.notify()

    def lower_token_ceiling(self, max_batch_tokens: int) -> int:
        """Lower ``max_batch_tokens`` (never raise it), e.g. after an out-of-memory error."""
        with self._cond:
            if max_batch_tokens < self.policy.max_batch_tokens:
                self.policy = dataclasses.replace(self.policy, max_batch_tokens=max(1, max_batch_tokens))
            return self.policy.max_batch_tokens

    def close(self) -> None:
        """Stop accepting; what waits is still released, without waiting for the timer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def poll(self, now: float | None = None) -> list[Entry[T]] | None:
        """Release a batch if one is due at ``now``; else None. Never returns an empty list."""
        with self._cond:
            return self._poll(self._clock() if now is None else now)

    def take(self, timeout_s: float | None = None) -> list[Entry[T]] | None:
        """Block until a batch is due and return it; None on timeout or when closed and drained."""
        give_up = None if timeout_s is None else self._clock() + timeout_s
        with self._cond:
            while True:
                now = self._clock()
                batch = self._poll(now)
                if batch is not None:
                    return batch
                if self._closed:
                    return None
                remaining = None if give_up is None else give_up - now
                if remaining is not None and remaining <= 0:
                    return None
                waits = [w for w in (self._wait_left_s(now), remaining) if w is not None]
                self._cond.wait(min(waits) if waits else None)

    # -- decision ---------------------------------------------------------------------------
    def _wait_left_s(self, now: float) -> float | None:
        """Seconds until the oldest entry's wait runs out (0 if already); None if the pool is empty."""
        if not self._pool:
            return None
        oldest = next(iter(self._pool.values()))
        waited_ms = (now - oldest.arrival_s) * 1000.0
        longest = max(e.tokens for e in self._pool.values())
        allowed_ms = self.wait.wait_ms(len(self._pool), len(self._pool) * longest, waited_ms, now)
        left_s = (allowed_ms - waited_ms) / 1000.0
        return left_s if left_s > 1e-9 else 0.0  # float noise must not leave a due batch waiting

    def _poll(self, now: float) -> list[Entry[T]] | None:
        if not self._pool:
            return None
        p = self.policy
        full = len(self._pool) >= p.max_batch_size or self._tokens >= p.max_batch_tokens
        if not (self._closed or full or self._wait_left_s(now) == 0.0):
            return None
        batch = self._select(now)
        for e in batch:
            del self._pool[e.seq]
            self._tokens -= e.tokens
            self._served[e.tenant] += e.tokens
            self._waiting[e.tenant] -= 1
            if not self._waiting[e.tenant]:  # idle: forget it (it rejoins at the floor)
                del self._waiting[e.tenant]
                del self._served[e.tenant]
        return batch

    def active_tenants(self) -> int:
        """Tenants with at least one entry waiting: the size of the fairness state."""
        with self._cond:
            return len(self._served)

    def _rank(self, e: Entry[T], now: float) -> int:
        aging = self.policy.priority_aging_ms
        if aging <= 0:
            return e.priority
        return max(0, e.priority - int((now - e.arrival_s) * 1000.0 // aging))

    def _select(self, now: float) -> list[Entry[T]]:
        p = self.policy
        entries = list(self._pool.values())
        ranks = {e.seq: self._rank(e, now) for e in entries}
        top = min(ranks.values())
        cands = [e for e in entries if ranks[e.seq] == top]
        anchor_tenant = min(
            dict.fromkeys(e.tenant for e in cands), key=lambda t: self._served[t]
        )  # ties → the tenant whose oldest entry came first
        anchor = next(e for e in cands if e.tenant == anchor_tenant)
        quota = fair_quota(Counter(e.tenant for e in cands), p.max_batch_size)

        def closeness(e: Entry[T]) -> tuple[int, int]:
            return abs(e.tokens - anchor.tokens), e.seq

        top_order = sorted((e for e in cands if e is not anchor), key=closeness)
        rest_order = sorted(
            (e for e in entries if ranks[e.seq] != top), key=lambda e: (ranks[e.seq], *closeness(e))
        )
        batch, longest, taken = [anchor], anchor.tokens, Counter({anchor.tenant: 1})
        chosen = {anchor.seq}
        for phase, order in ((0, top_order), (1, top_order), (2, rest_order)):
            for e in order:
                if len(batch) >= p.max_batch_size:
                    return self._cut(batch, entries)
                if e.seq in chosen or (phase == 0 and taken[e.tenant] >= quota[e.tenant]):
                    continue
                if (len(batch) + 1) * max(longest, e.tokens) > p.max_batch_tokens:
                    continue
                batch.append(e)
                chosen.add(e.seq)
                taken[e.tenant] += 1
                longest = max(longest, e.tokens)
        return self._cut(batch, entries)

    def _cut(self, walk: list[Entry[T]], entries: list[Entry[T]]) -> list[Entry[T]]:
        """The cheapest prefix of the line-up ``walk`` (see the module docstring, *Cost*)."""
        if len(walk) <= 1:
            return walk
        overhead = overhead_in_tokens(self._cost() if self._cost else None, self.policy.overhead_tokens)
        keep = cheapest_prefix(
            [e.tokens for e in walk], [e.tokens for e in entries], self.policy.max_batch_size, overhead
        )
        return walk[:keep]
