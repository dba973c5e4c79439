"""The dynamic batcher: a thread-safe waiting pool that releases batches.

Contract (tested in ``tests/unit/test_batcher.py`` with a fake clock):

- A batch is released when it is *full* — ``max_batch_size`` entries waiting, or the waiting
  entries' padded size reaching ``max_batch_tokens`` — or when the oldest entry has waited
  ``max_wait_ms``, or when the pool is closing.
- A batch is never empty. An entry larger than the token budget on its own is released alone, so a
  budget smaller than one long input never loops forever.
- Entries are released in arrival order (FIFO); every entry put is released exactly once.
- The padded size of a batch is ``len(batch) × longest entry``: what the forward pass really costs.

The pool is pure logic around a clock; :meth:`Batcher.poll` makes one decision at a given time and
:meth:`Batcher.take` blocks on a condition variable until a decision releases something.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32
    max_batch_tokens: int = 8_192
    max_wait_ms: float = 10.0

    def __post_init__(self) -> None:
        if self.max_batch_size < 1 or self.max_batch_tokens < 1 or self.max_wait_ms < 0:
            raise ValueError(f"batch policy needs size ≥ 1, tokens ≥ 1, wait ≥ 0; got {self}")


@dataclass
class Entry(Generic[T]):
    item: T
    tokens: int
    arrival_s: float


class Batcher(Generic[T]):
    """A waiting pool that hands out batches by :class:`BatchPolicy`."""

    def __init__(self, policy: BatchPolicy, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy
        self._clock = clock
        self._pool: deque[Entry[T]] = deque()
        self._cond = threading.Condition()
        self._closed = False

    def __len__(self) -> int:
        return len(self._pool)

    @property
    def closed(self) -> bool:
        return self._closed

    def put(self, item: T, tokens: int) -> None:
        """Add one entry of ``tokens`` tokens (≥ 1) to the pool."""
        with self._cond:
            if self._closed:
                raise RuntimeError("batcher is closed; no new work is accepted")
            self._pool.append(Entry(item, max(1, tokens), self._clock()))
            self._cond.notify()

    def close(self) -> None:
        """Stop accepting; what waits is still released, without waiting for the timer."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def poll(self, now: float | None = None) -> list[Entry[T]] | None:
        """Release a batch if one is due at ``now``; else None. Never returns an empty list."""
        with self._cond:
            return self._poll(self._clock() if now is None else now)

    def wait_s(self, now: float) -> float | None:
        """Seconds until the oldest entry's wait runs out (0 if already); None if the pool is empty."""
        if not self._pool:
            return None
        return max(0.0, self._pool[0].arrival_s + self.policy.max_wait_ms / 1000.0 - now)

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
                waits = [w for w in (self.wait_s(now), remaining) if w is not None]
                self._cond.wait(min(waits) if waits else None)

    # -- decision ---------------------------------------------------------------------------
    def _poll(self, now: float) -> list[Entry[T]] | None:
        if not self._pool:
            return None
        due = self._closed or self.wait_s(now) == 0.0 or self._full()
        return self._select() if due else None

    def _full(self) -> bool:
        p = self.policy
        if len(self._pool) >= p.max_batch_size:
            return True
        longest = 0
        for n, e in enumerate(self._pool, start=1):
            longest = max(longest, e.tokens)
            if n * longest >= p.max_batch_tokens:
                return True
        return False

    def _select(self) -> list[Entry[T]]:
        p = self.policy
        batch: list[Entry[T]] = [self._pool.popleft()]
        longest = batch[0].tokens
        while self._pool and len(batch) < p.max_batch_size:
            nxt = self._pool[0]
            if (len(batch) + 1) * max(longest, nxt.tokens) > p.max_batch_tokens:
                break
            longest = max(longest, nxt.tokens)
            batch.append(self._pool.popleft())
        return batch


def padded_tokens(batch: list[Entry[T]]) -> int:
    """Tokens the forward pass computes for this batch, padding included."""
    return len(batch) * max(e.tokens for e in batch) if batch else 0
