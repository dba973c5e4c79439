"""CPU over a run, by group of processes: samples taken in the background, read back for any window.

The ceiling bench samples every group's CPU (:func:`ops.bench.procstat.groups_ms`) a few times a
second while a burst runs, then asks for the CPU spent over the whole burst and over its steady part
(between two completion times), interpolating linearly between the samples either side.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ops.bench.procstat import groups_ms

TOTAL = "total"


@dataclass(frozen=True)
class Sample:
    t: float  # time.monotonic() seconds
    ms: dict[str, float]  # CPU milliseconds so far, by group


class CpuTrace:
    """Samples of each group's cumulative CPU (ms), in time order."""

    def __init__(
        self,
        groups: Mapping[str, Iterable[int]],
        read: Callable[[Mapping[str, Iterable[int]]], dict[str, float]] = groups_ms,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.groups = {name: list(pids) for name, pids in groups.items()}
        self._read, self._clock = read, clock
        self.samples: list[Sample] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> Sample:
        ms = self._read(self.groups)
        s = Sample(self._clock(), ms)
        with self._lock:
            self.samples.append(s)
        return s

    def start(self, every_s: float = 0.25) -> None:
        """Sample now, then every ``every_s`` seconds in a daemon thread until :meth:`stop`."""
        self.sample()

        def loop() -> None:
            while not self._stop.wait(every_s):
                self.sample()

        self._thread = threading.Thread(target=loop, name="cpu-trace", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the sampling thread and take a last sample."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def at(self, t: float) -> dict[str, float]:
        """Each group's cumulative CPU (ms) at time ``t``, interpolated (clamped to the samples)."""
        return cpu_at(self.samples, t)

    def between(self, t0: float, t1: float) -> dict[str, float]:
        """CPU milliseconds each group spent between ``t0`` and ``t1``."""
        a, b = self.at(t0), self.at(t1)
        return {name: max(0.0, b.get(name, 0.0) - a.get(name, 0.0)) for name in self.groups}


def cpu_at(samples: Sequence[Sample], t: float) -> dict[str, float]:
    """Cumulative CPU by group at ``t``, linear between the samples either side; before the first
    sample or after the last, that sample's figures. Raises ValueError with no samples."""
    if not samples:
        raise ValueError("no CPU samples: start the trace before the run")
    times = [s.t for s in samples]
    i = bisect.bisect_left(times, t)
    if i == 0:
        return dict(samples[0].ms)
    if i == len(samples):
        return dict(samples[-1].ms)
    lo, hi = samples[i - 1], samples[i]
    w = (t - lo.t) / (hi.t - lo.t) if hi.t > lo.t else 1.0
    return {k: lo.ms.get(k, 0.0) + w * (hi.ms.get(k, 0.0) - lo.ms.get(k, 0.0)) for k in hi.ms}


def per_request(cpu_ms: Mapping[str, float], requests: int) -> dict[str, float]:
    """CPU milliseconds per request by group, plus ``total`` (all groups together)."""
    if requests <= 0:
        raise ValueError(f"per-request CPU needs at least one request (got {requests})")
    out = {name: ms / requests for name, ms in cpu_ms.items()}
    out[TOTAL] = sum(cpu_ms.values()) / requests
    return out


@dataclass(frozen=True)
class Window:
    """The steady part of a burst: from the ``lo`` to the ``hi`` quantile of completions."""

    t0: float
    t1: float
    completions: int

    @property
    def rate_per_s(self) -> float:
        return self.completions / (self.t1 - self.t0) if self.t1 > self.t0 else float("nan")


def steady_window(done_at: Sequence[float], lo: float = 0.1, hi: float = 0.9) -> Window:
    """The window between the ``lo`` and ``hi`` quantiles of the completion times ``done_at``
    (start-up and the drain at the end left out, as the saturation burst of ``bench`` does)."""
    ts = sorted(done_at)
    i, j = int(lo * len(ts)), int(hi * len(ts)) - 1
    if j <= i:
        raise ValueError(f"a steady window needs more completions (got {len(ts)})")
    return Window(ts[i], ts[j], j - i)
