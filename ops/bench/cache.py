"""``inferq-ops bench --cache``: throughput on repeated inputs with the result cache on and off.

Real traffic repeats itself: a few texts are sent very often, most rarely. The load here draws
each round's requests from a Zipf law (exponent :attr:`CachePlan.zipf_s`) over a vocabulary of
distinct texts, so popular texts come back often and the long tail mostly once. The same stack
(real all-MiniLM-L6-v2, where the model's cost dominates) serves both sides; only the worker is
restarted between them, with and without ``INFERQ_CACHE_REDIS_URL``. Rounds alternate (off on,
on off, ..., as :func:`ops.bench.trusted.interleave` does), each side gets the same draw in a round, and
the cache keeps its entries from round to round (a warm cache, as in service). The hit ratio is
read from the worker's own counters (``inferq_cache_hits`` / ``inferq_cache_misses``).
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from rich.console import Console
from rich.table import Table

from ops.bench.corpus import bench_texts
from ops.bench.load import InferqLoad
from ops.bench.trusted import Interleaved
from ops.stack import Stack, free_port, on_free_ports
from schemas.naming import metrics_dir
from schemas.settings import Settings

MODEL = "all-MiniLM-L6-v2"
ONLY = ("broker", "redis", "cache", "worker", "intake")  # what the load needs


@dataclass(frozen=True)
class CachePlan:
    vocabulary: int = 3_000  # distinct texts the requests are drawn from
    zipf_s: float = 1.1
    requests: int = 400  # per round and side
    rounds: int = 3  # on/off pairs, alternated

    @classmethod
    def quick(cls) -> CachePlan:
        return cls(requests=200, rounds=2)


def zipf_draw(texts: list[str], n: int, s: float, seed: int) -> list[str]:
    """``n`` texts drawn with replacement, the text of rank ``r`` (1-based) with weight ``r**-s``."""
    weights = [1.0 / (rank**s) for rank in range(1, len(texts) + 1)]
    return random.Random(seed).choices(texts, weights=weights, k=n)


class _Switch:
    """One stack whose worker runs with the cache (``on``) or without it (``off``)."""

    def __init__(self, settings: Settings, root: Path) -> None:
        base = on_free_ports(settings, root).model_copy(
            update={"worker_models": MODEL, "log_ship": False, "cache_max_bytes": 256 * 1024 * 1024}
        )
        on = base.model_copy(update={"cache_redis_url": f"redis://127.0.0.1:{free_port()}/0"})
        self.stacks = {"on": Stack(on), "off": Stack(base.model_copy(update={"cache_redis_url": ""}))}
        self.mode = "on"
        self.settings = on

    def up(self) -> None:
        stack = self.stacks["on"]
        if not any(svc["running"] for svc in stack.status().values()):
            shutil.rmtree(stack.data_dir, ignore_errors=True)  # an empty broker log and store
        stack.up(only=[svc.name for svc in stack.services() if svc.name in ONLY])

    def use(self, mode: str) -> None:
        """Restart the worker with the cache (``on``) or without it (``off``) if it is not already."""
        if mode == self.mode:
            return
        current = self.stacks[self.mode]
        pid = current.pid("worker")
        if pid is not None:
            current._stop(pid, 30.0)
        self.stacks[mode].up(only=["worker"], settle_s=0.5)
        self.mode = mode

    def down(self) -> None:
        self.stacks["on"].down()


def cache_counts(settings: Settings) -> tuple[float, float]:
    """(hits, misses) the worker processes counted so far, from the stack's metrics folder."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir(settings)))
    hits = registry.get_sample_value("inferq_cache_hits_total", {"model": MODEL}) or 0.0
    misses = registry.get_sample_value("inferq_cache_misses_total", {"model": MODEL}) or 0.0
    return hits, misses


def bench_cache(settings: Settings, plan: CachePlan, step: Callable[[str], None]) -> dict[str, Any]:
    """Req/s with the cache off and on, alternated, and the cache's hit ratio in its rounds."""
    vocabulary = list(dict.fromkeys(bench_texts(plan.vocabulary, seed=29)))
    switch = _Switch(settings, (settings.state_dir / "bench-cache").resolve())
    step("cache: starting the stack")
    switch.up()
    load = InferqLoad(switch.settings, MODEL)
    rounds = Interleaved("off", "on")
    draws: list[list[str]] = []
    ratios: list[float] = []

    def measure(mode: str, texts: list[str]) -> float:
        switch.use(mode)
        before = cache_counts(switch.settings)
        steady, _, _ = load.burst(texts)
        if mode == "on":
            hits, misses = (a - b for a, b in zip(cache_counts(switch.settings), before, strict=True))
            ratios.append(hits / (hits + misses) if hits + misses else float("nan"))
        return steady

    try:
        load.burst(vocabulary[-64:])  # warm every path (with the tail: rarely drawn afterwards)
        for i in range(plan.rounds):  # off on, on off, ...: a drift lands on both sides alike
            draws.append(zipf_draw(vocabulary, plan.requests, plan.zipf_s, seed=i))
            got: dict[str, float] = {}
            for mode in ("off", "on")[:: 1 if i % 2 == 0 else -1]:
                step(f"cache {mode}: round {i + 1} of {plan.rounds}")
                got[mode] = measure(mode, draws[-1])
            rounds.a_runs.append(got["off"])
            rounds.b_runs.append(got["on"])
    finally:
        load.close()
        switch.down()
    out = rounds.as_dict()
    return {
        "model": MODEL,
        "vocabulary": len(vocabulary),
        "zipf_s": plan.zipf_s,
        "requests_per_round": plan.requests,
        "off_req_per_s": out["off_median"],
        "on_req_per_s": out["on_median"],
        "speedup": out["ratio"],
        "speedup_runs": out["ratio_runs"],
        "off_runs_req_per_s": out["off_runs"],
        "on_runs_req_per_s": out["on_runs"],
        "hit_ratio_runs": ratios,
        "hit_ratio": sorted(ratios)[len(ratios) // 2] if ratios else float("nan"),
        "distinct_per_round": [len(set(d)) for d in draws],
    }


def print_cache(console: Console, data: dict[str, Any]) -> None:
    """The on/off table: median req/s of each side, the speed-up and the hit ratio."""
    table = Table(
        title=f"result cache: {data['requests_per_round']} requests a round, Zipf s={data['zipf_s']} "
        f"over {data['vocabulary']} texts ({MODEL})"
    )
    for column in ("cache", "req/s (median)", "runs", "hit ratio"):
        table.add_column(column)
    runs = {k: ", ".join(f"{v:.0f}" for v in data[f"{k}_runs_req_per_s"]) for k in ("off", "on")}
    table.add_row("off", f"{data['off_req_per_s']:.1f}", runs["off"], "-")
    table.add_row(
        "on",
        f"{data['on_req_per_s']:.1f}",
        runs["on"],
        ", ".join(f"{r:.2f}" for r in data["hit_ratio_runs"]),
    )
    console.print(table)
    console.print(
        f"speed-up on ÷ off: {data['speedup']:.2f}× (rounds: "
        + ", ".join(f"{r:.2f}" for r in data["speedup_runs"])
        + ")"
    )
