"""How long the batcher waits for more work: a fixed wait, or one derived from a fitted cost model.

The cost model fits ``time_ms ≈ a·padded_tokens + b·texts + c`` online (least squares over the last
batches, refitted every few observations). :class:`AdaptiveWait` uses it with an estimate of the
arrival rate to decide, each time the pool changes, whether waiting is worth it:

- flush now when the oldest entry would otherwise miss ``target_latency_ms`` (its wait so far plus
  the predicted forward time), or when the wait reaches ``max_wait_ms``;
- otherwise wait only while more texts are expected to arrive during half a forward pass than are
  already waiting (``rate × run_ms / 2 > n``). A text that arrives just after a batch starts waits
  for the whole pass; one that joins instead adds only its marginal cost. At low load the rule
  flushes at once (no latency is added to a lone request); under load the model is busy and the
  pool fills by itself; in between it waits just long enough to match the batch to the traffic.

Both policies answer the same question — "how many ms may the oldest entry wait?" — so the batcher
does not care which one it has. Times are in ms unless a name says ``_s``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# (texts, tokens each) of the timed passes at start: two sizes × two lengths, each twice (the first
# pass at a shape can pay one-off allocation); ~1 s of MiniLM on 2 CPU cores, milliseconds on a GPU
CALIBRATION: tuple[tuple[int, int], ...] = ((1, 16), (1, 128), (8, 16), (8, 128)) * 2


class WaitPolicy(Protocol):
    def wait_ms(self, texts: int, padded_tokens: int, oldest_wait_ms: float, now_s: float) -> float:
        """How long the oldest entry may wait in total before the pool is flushed."""
        ...

    def on_arrival(self, now_s: float) -> None:
        """One text entered the pool at ``now_s`` (seconds, the batcher's clock)."""
        ...


@dataclass
class FixedWait:
    """Always wait ``max_wait_ms`` for the oldest entry (the classic dynamic-batching timer)."""

    max_wait_ms: float

    def wait_ms(self, texts: int, padded_tokens: int, oldest_wait_ms: float, now_s: float) -> float:
        return self.max_wait_ms

    def on_arrival(self, now_s: float) -> None:
        return None


class CostModel:
    """Online least-squares fit of forward time: ``ms ≈ a·padded_tokens + b·texts + c``.

    Thread-safe: the model thread observes, the batcher (under its own lock) predicts.
    """

    def __init__(self, window: int = 256, refit_every: int = 8, min_samples: int = 8) -> None:
        self._samples: deque[tuple[float, float, float]] = deque(maxlen=window)
        self._refit_every = refit_every
        self._min_samples = min_samples
        self._since_fit = 0
        self._coef: tuple[float, float, float] | None = None
        self._rates: tuple[float, float] | None = None
        self._prior: list[tuple[float, float, float]] = []  # from :meth:`calibrate`
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self._coef is not None

    @property
    def coefficients(self) -> tuple[float, float, float] | None:
        """(a ms/token, b ms/text, c ms/batch) once fitted."""
        return self._coef

    def rates(self) -> tuple[float, float] | None:
        """(ms per padded token, ms per forward pass) once fitted: what the batcher cuts batches by.

        Fitted apart, on padded tokens alone (``ms ≈ a·padded + c``): in the three-term fit the
        per-text term can absorb the per-token cost when batches hold like lengths (the columns are
        nearly collinear), and a per-token cost of 0 would tell the batcher that padding is free.
        """
        return self._rates

    def _refit(self) -> None:
        # the timed passes at start stand in until real batches are enough to fit on: taken while the
        # worker's neighbours start too, they may carry one-off delays that real batches do not
        samples = (
            list(self._samples)
            if len(self._samples) >= self._min_samples
            else self._prior + list(self._samples)
        )
        self._coef = _fit(samples) or self._coef
        # one padded size in every sample (a lone sequence decoding, a full batch of like texts) cannot
        # tell the per-token from the per-pass cost: the fit would call all of it per-token; keep the last
        spread = len({padded for padded, _, _ in samples}) > 1
        two = _fit([(padded, 0.0, ms) for padded, _, ms in samples]) if spread else None
        self._rates = (two[0], two[2]) if two else self._rates
        self._since_fit = 0

    def calibrate(
        self, run_ms: Callable[[int, int], float], shapes: Sequence[tuple[int, int]] = CALIBRATION
    ) -> None:
        """Time a forward pass at each (texts, tokens per text) of ``shapes`` and fit on them, so the
        model is fitted before the first request (the shapes span both batch size and length, which
        is what separates the per-pass overhead from the per-token cost). Once ``min_samples`` real
        batches are observed, the fit uses those alone."""
        timed = [(float(t * n), float(t), run_ms(t, n)) for t, n in shapes]
        with self._lock:  # fit now, on these, until real batches take over
            self._prior = timed
            self._refit()

    def observe(self, padded_tokens: int, texts: int, ms: float) -> None:
        with self._lock:
            self._samples.append((float(padded_tokens), float(texts), float(ms)))
            self._since_fit += 1
            if len(self._samples) >= self._min_samples and (
                self._coef is None or self._since_fit >= self._refit_every
            ):
                self._refit()

    def predict_ms(self, padded_tokens: int, texts: int) -> float:
        coef = self._coef
        if coef is None:
            raise RuntimeError("cost model not fitted yet; check .ready first")
        a, b, c = coef
        return a * padded_tokens + b * texts + c


def _fit(samples: list[tuple[float, float, float]]) -> tuple[float, float, float] | None:
    """Non-negative least squares by elimination: drop a column whose coefficient comes out < 0."""
    data = np.asarray(samples)
    x_all = np.column_stack([data[:, 0], data[:, 1], np.ones(len(data))])
    y = data[:, 2]
    cols = [0, 1, 2]
    while cols:
        x = x_all[:, cols]
        if np.linalg.matrix_rank(x) < len(cols):  # e.g. every batch the same size: drop texts
            cols = [c for c in cols if c != 1] if 1 in cols else cols[:-1]
            continue
        sol, *_ = np.linalg.lstsq(x, y, rcond=None)
        if (sol >= 0).all():
            coef = [0.0, 0.0, 0.0]
            for c, v in zip(cols, sol, strict=True):
                coef[c] = float(v)
            return coef[0], coef[1], coef[2]
        cols = [c for c, v in zip(cols, sol, strict=True) if v >= 0] or []
    return None


class AdaptiveWait:
    """Wait derived from the cost model and the arrival rate (see the module docstring)."""

    def __init__(
        self, cost: CostModel, target_latency_ms: float, max_wait_ms: float, rate_window_s: float = 1.0
    ) -> None:
        self.cost = cost
        self.target_latency_ms = target_latency_ms
        self.max_wait_ms = max_wait_ms
        self._tau_s = rate_window_s
        self._rate = 0.0  # texts per second, exponentially decayed
        self._last_s: float | None = None

    def on_arrival(self, now_s: float) -> None:
        self._rate = self.rate_per_s(now_s) + 1.0 / self._tau_s
        self._last_s = now_s

    def rate_per_s(self, now_s: float) -> float:
        """Recent arrival rate in texts per second."""
        if self._last_s is None:
            return 0.0
        return self._rate * math.exp(-max(0.0, now_s - self._last_s) / self._tau_s)

    def wait_ms(self, texts: int, padded_tokens: int, oldest_wait_ms: float, now_s: float) -> float:
        if not self.cost.ready:  # nothing measured yet: behave like the fixed timer
            return self.max_wait_ms
        run_ms = self.cost.predict_ms(padded_tokens, texts)
        if oldest_wait_ms + run_ms >= self.target_latency_ms:
            return 0.0
        if self.rate_per_s(now_s) * run_ms / 2000.0 <= texts:
            return 0.0
        return min(self.max_wait_ms, self.target_latency_ms - run_ms)
