"""Backpressure: keep a model's backlog in Kafka, not in Celery, Redis or the worker's memory.

Before each poll the intake asks how many more requests each model may admit: the bound
``INFERQ_BACKPRESSURE_MAX_INFLIGHT`` minus that model's requests admitted and not finished (a
counter the store keeps exact). The poll reads at most the smallest of these, so no model ever
passes its bound. When a model reaches it, the intake pauses its partitions (the requests topic
is shared, so that is all of them) and keeps polling, so the group keeps it; they resume once every
model is below ``resume_ratio`` of the bound. What waits, waits in Kafka, uncommitted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

# how often the counters are read while records flow (one Redis MGET); paused, at most this often too
CHECK_S = 0.005


class Backpressure:
    """Decides, before each poll, whether to read and how many records at most."""

    def __init__(
        self,
        in_flight: Callable[[Sequence[str]], dict[str, int]],
        models: Sequence[str],
        max_inflight: int,
        resume_ratio: float,
    ) -> None:
        self._in_flight = in_flight
        self.models = list(models)
        self.max_inflight = max_inflight
        self.resume_below = max(1, int(max_inflight * resume_ratio))
        self.paused = False
        self.saturated: list[str] = []  # the models at their bound, while paused
        self._room = max_inflight
        self._next_check = 0.0

    def room(self, now_s: float | None = None) -> int:
        """How many records the next poll may read (0 = stay paused); updates ``paused``."""
        now_s = time.monotonic() if now_s is None else now_s
        if now_s < self._next_check:
            return 0 if self.paused else self._room
        self._next_check = now_s + CHECK_S
        counts = self._in_flight(self.models)
        busiest = max(counts.values(), default=0)
        if self.paused and busiest < self.resume_below:
            self.paused, self.saturated = False, []
        elif not self.paused and busiest >= self.max_inflight:
            self.paused = True
            self.saturated = sorted(m for m, n in counts.items() if n >= self.max_inflight)
        self._room = 0 if self.paused else self.max_inflight - busiest
        return self._room

    def admitted(self, n: int) -> None:
        """``n`` requests were just admitted: the room left shrinks until the next read."""
        self._room = max(0, self._room - n)
