"""Generation: continuous versus static batching, through the whole pipeline, in one run.

For each mode a stack of its own (broker, Redis, worker serving tiny-lm, intake) takes the same
closed-loop loads: ``concurrency`` clients, each publishing a ``generate`` request to Kafka and the
next one as soon as its result is terminal, until ``requests`` have finished — once with as many
clients as the running batch holds (at capacity: continuous batching never makes anyone wait),
once with twice as many (oversubscribed: requests queue in both modes). Each request asks
for a different number of tokens (drawn once, with a fixed seed, between ``min_new_tokens`` and
``max_new_tokens``), so short and long generations share the batch: static batching holds every
member until the longest is done; continuous batching lets members leave and newcomers join
between steps.

Figures per mode: generated tokens per second over the run, time to first token (published →
first token, from each result's timings) and end-to-end latency, p50 and p99.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from kafka import KafkaProducer
from rich.console import Console
from rich.table import Table

from ops.bench.corpus import bench_texts
from ops.stack import Stack, on_free_ports
from schemas.connections import kafka_options
from schemas.messages import InferenceRequest, InferenceResult, ResultStatus
from schemas.naming import requests_topic
from schemas.settings import Settings
from workers.store.store import DoneWatcher, ResultStore

MODEL = "tiny-lm"
MODES = ("continuous", "static")


@dataclass(frozen=True)
class GeneratePlan:
    requests: int = 96
    concurrency: tuple[int, ...] = (16, 32)  # the running batch's size, then twice it
    min_new_tokens: int = 8
    max_new_tokens: int = 160
    max_running: int = 16
    seed: int = 7

    @classmethod
    def quick(cls) -> GeneratePlan:
        return cls(requests=32, concurrency=(8,), max_new_tokens=96, max_running=8)

    def budgets(self) -> list[int]:
        rng = random.Random(self.seed)
        return [rng.randint(self.min_new_tokens, self.max_new_tokens) for _ in range(self.requests)]


@dataclass
class ModeResult:
    mode: str
    requests: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    latency_p50_ms: float
    latency_p99_ms: float
    failed: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def closed_loop(
    settings: Settings, plan: GeneratePlan, concurrency: int, prompts: Sequence[str]
) -> list[InferenceResult]:
    """Run the plan's requests, ``concurrency`` at a time; returns every terminal result."""
    store = ResultStore.from_settings(settings)
    producer = KafkaProducer(**kafka_options(settings), acks="all", linger_ms=0)
    topic, budgets = requests_topic(settings), plan.budgets()
    pending: set[str] = set()
    results: list[InferenceResult] = []

    def send(i: int) -> None:
        req = InferenceRequest(
            task="generate",
            model=MODEL,
            inputs=prompts[i % len(prompts)],
            generation={"max_new_tokens": budgets[i], "temperature": 1.0, "seed": i},
        )
        producer.send(topic, key=req.request_id.encode(), value=req.wire_json().encode())
        pending.add(req.request_id)

    with DoneWatcher(store) as watcher:
        nxt = 0
        while nxt < min(concurrency, plan.requests):
            send(nxt)
            nxt += 1
        give_up = time.monotonic() + 600
        while pending and time.monotonic() < give_up:
            woken = [rid for rid in watcher.finished(0.5) if rid in pending]
            for rid, res in store.get_many(woken).items():
                if res is None or not res.status.terminal:
                    continue
                pending.discard(rid)
                results.append(res)
                if nxt < plan.requests:
                    send(nxt)
                    nxt += 1
    producer.close()
    if pending:
        raise TimeoutError(f"{len(pending)} generate requests unanswered after 600 s")
    return results


def summarise(mode: str, results: list[InferenceResult]) -> ModeResult:
    done = [r for r in results if r.status is ResultStatus.DONE]
    tokens = sum(o.tokens for r in done for o in r.outputs or [] if o.kind == "generation")
    start = min(r.timings.published_ms or 0.0 for r in results)
    end = max(r.timings.done_ms or 0.0 for r in results)
    ttft = [
        t.first_token_ms - t.published_ms
        for t in (r.timings for r in done)
        if t.first_token_ms and t.published_ms
    ]
    e2e = [(r.timings.done_ms or 0.0) - (r.timings.published_ms or 0.0) for r in done]
    wall_s = max(1e-9, (end - start) / 1000.0)

    def pct(xs: list[float], q: float) -> float:
        return float(np.percentile(xs, q)) if xs else float("nan")

    return ModeResult(
        mode,
        len(results),
        tokens,
        wall_s,
        tokens / wall_s,
        pct(ttft, 50),
        pct(ttft, 99),
        pct(e2e, 50),
        pct(e2e, 99),
        len(results) - len(done),
    )


def bench_generate(settings: Settings, plan: GeneratePlan, step: Callable[[str], None]) -> dict[str, Any]:
    """Both modes, one after the other on the same cores; returns the figures and their ratios."""
    prompts = [t[:160] for t in bench_texts(256, seed=plan.seed)]
    modes: dict[str, dict[str, Any]] = {}
    for mode in MODES:
        step(f"generate: {mode} batching, {plan.requests} requests at {plan.concurrency} in flight")
        gs = on_free_ports(settings, (settings.state_dir / f"bench-generate-{mode}").resolve()).model_copy(
            update={
                "worker_models": MODEL,
                "log_ship": False,
                "generate_batching": mode,
                "generate_max_running": plan.max_running,
            }
        )
        stack = Stack(gs)
        try:
            stack.up(only=["broker", "redis", "worker", "intake"])
            warm = GeneratePlan(requests=4, max_new_tokens=16, seed=plan.seed + 1)
            closed_loop(gs, warm, 4, prompts)
            modes[mode] = {
                str(c): summarise(mode, closed_loop(gs, plan, c, prompts)).as_dict() for c in plan.concurrency
            }
        finally:
            stack.down()
    ratios = {}
    for c in map(str, plan.concurrency):
        cont, static = modes["continuous"][c], modes["static"][c]
        ratios[c] = {
            "tokens_per_s": cont["tokens_per_s"] / static["tokens_per_s"] if static["tokens_per_s"] else None,
            "ttft_p50": static["ttft_p50_ms"] / cont["ttft_p50_ms"] if cont["ttft_p50_ms"] else None,
        }
    return {"model": MODEL, "plan": asdict(plan), "modes": modes, "continuous_over_static": ratios}


def print_generate(console: Console, data: dict[str, Any]) -> None:
    p = data["plan"]
    t = Table(
        title=f"generate ({data['model']}): {p['requests']} requests per load, running batch of "
        f"{p['max_running']}, {p['min_new_tokens']}–{p['max_new_tokens']} new tokens each"
    )
    cols = (
        "batching",
        "in flight",
        "tokens/s",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "latency p50 ms",
        "p99 ms",
        "failed",
    )
    for col in cols:
        t.add_column(col, justify="left" if col == "batching" else "right")
    for mode, levels in data["modes"].items():
        for c, m in levels.items():
            t.add_row(
                mode,
                c,
                f"{m['tokens_per_s']:.0f}",
                f"{m['ttft_p50_ms']:.0f}",
                f"{m['ttft_p99_ms']:.0f}",
                f"{m['latency_p50_ms']:.0f}",
                f"{m['latency_p99_ms']:.0f}",
                str(m["failed"]),
            )
    console.print(t)
    for c, r in data.get("continuous_over_static", {}).items():
        if r["tokens_per_s"] and r["ttft_p50"]:
            console.print(
                f"{c} in flight, continuous ÷ static: tokens/s × {r['tokens_per_s']:.2f}, "
                f"TTFT p50 ÷ {r['ttft_p50']:.1f}"
            )
