"""Closed-loop load: ``concurrency`` clients, each sending one text and waiting for its answer.

The same load for every system. inferq is driven through Kafka (publish) and Redis (the ``done``
channel, then a read of the result); peers through HTTP. Latency is from the send to the client
holding the result. Each level runs a warm-up, then a measured window; throughput counts the
answers that arrive inside the window.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import httpx
import numpy as np

from producers.client import InferqClient
from schemas.messages import InferenceRequest
from schemas.settings import Settings
from workers.store.store import DoneWatcher, ResultStore


@dataclass
class Level:
    """One system at one concurrency."""

    system: str
    concurrency: int
    completed: int
    window_s: float
    throughput_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def summarise(
    system: str, concurrency: int, latencies_ms: list[float], window_s: float, errors: int
) -> Level:
    return Level(
        system,
        concurrency,
        len(latencies_ms),
        window_s,
        len(latencies_ms) / window_s if window_s > 0 else 0.0,
        float(np.percentile(latencies_ms, 50)) if latencies_ms else float("nan"),
        float(np.percentile(latencies_ms, 99)) if latencies_ms else float("nan"),
        errors,
    )


class InferqLoad:
    """Closed-loop clients of the pipeline: publish to Kafka, wake on the done channel, read Redis."""

    def __init__(self, settings: Settings, model: str) -> None:
        self.s, self.model = settings, model
        self.store = ResultStore.from_settings(settings)
        # the client library users publish with (acks=all, and the intake's doorbell rung after each
        # record), without lingering: one closed-loop client sends one record at a time
        self.client = InferqClient(settings, linger_ms=0)

    def _send(self, text: str) -> str:
        req = InferenceRequest(task="embed", model=self.model, inputs=text)
        self.client.publish(req)
        return req.request_id

    def run(self, concurrency: int, texts: Sequence[str], warmup_s: float, window_s: float) -> Level:
        source = itertools.cycle(texts)
        watcher = DoneWatcher(self.store)
        sent: dict[str, float] = {}
        latencies: list[float] = []
        errors = 0
        start = time.perf_counter()
        measure_from, stop_at = start + warmup_s, start + warmup_s + window_s
        for _ in range(concurrency):
            sent[self._send(next(source))] = time.perf_counter()
        try:
            while True:
                now = time.perf_counter()
                if now >= stop_at and not sent:
                    break
                if now >= stop_at + 60:
                    errors += len(sent)  # never answered within a minute of the window
                    break
                woken = [rid for rid in watcher.finished(0.5) if rid in sent]
                if not woken:
                    continue
                results = self.store.get_many(woken)
                got = time.perf_counter()
                for rid in woken:
                    t0 = sent.pop(rid)
                    res = results[rid]
                    if res is None or res.status.value != "done":
                        errors += 1
                    elif measure_from <= got <= stop_at:
                        latencies.append((got - t0) * 1000.0)
                    if got < stop_at:
                        sent[self._send(next(source))] = time.perf_counter()
        finally:
            watcher.close()
        return summarise("inferq", concurrency, latencies, window_s, errors)

    def burst(self, texts: Sequence[str], timeout_s: float = 600.0) -> tuple[float, float, list[float]]:
        """Publish every text at once; returns (steady throughput /s, whole-run /s, latencies ms).

        Steady throughput is measured between the 10th and the 90th percentile of completions, so
        start-up and the drain at the end do not count; the whole-run figure is also returned.
        """
        watcher = DoneWatcher(self.store)
        start = time.perf_counter()
        sent = {self._send(t): time.perf_counter() for t in texts}
        self.client.flush()
        done_at: list[float] = []
        latencies: list[float] = []
        try:
            while sent and time.perf_counter() - start < timeout_s:
                for rid in watcher.finished(0.5):
                    if rid in sent:
                        now = time.perf_counter()
                        latencies.append((now - sent.pop(rid)) * 1000.0)
                        done_at.append(now)
        finally:
            watcher.close()
        if sent:
            raise TimeoutError(f"{len(sent)} of {len(texts)} burst requests unanswered after {timeout_s} s")
        lo, hi = int(0.1 * len(done_at)), int(0.9 * len(done_at)) - 1
        steady = (hi - lo) / (done_at[hi] - done_at[lo]) if hi > lo else float("nan")
        return steady, len(texts) / (done_at[-1] - start), latencies

    def close(self) -> None:
        self.client.close()


def http_level(
    system: str, url: str, payloads: Sequence[dict], concurrency: int, warmup_s: float, window_s: float
) -> Level:
    """The same closed loop against an HTTP server (one asyncio client task per concurrent user)."""
    return asyncio.run(_http_level(system, url, payloads, concurrency, warmup_s, window_s))


async def _http_level(
    system: str, url: str, payloads: Sequence[dict], concurrency: int, warmup_s: float, window_s: float
) -> Level:
    source = itertools.cycle(payloads)
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + window_s
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def user(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                r = await client.post(url, json=next(source))
                ok = r.status_code == 200
            except httpx.HTTPError:
                ok = False
            got = time.perf_counter()
            if not ok:
                errors += 1
            elif measure_from <= got <= stop_at:
                latencies.append((got - t0) * 1000.0)

    async with httpx.AsyncClient(limits=limits, timeout=120) as client:
        await asyncio.gather(*(user(client) for _ in range(concurrency)))
    return summarise(system, concurrency, latencies, window_s, errors)
