"""Generation on the real model: continuous versus static batching through the whole pipeline,
and the model alone in this process as the ceiling, in one run.

The model is smollm2-135m-instruct; every request is a chat turn (``messages``: a user message of
1–14 corpus sentences, so prompts run from 36 to 148 tokens after the chat template, median 74),
decoded greedily, so the pipeline and the raw model produce the same answers. For each mode a
stack of its own (broker, Redis, worker serving the model, intake) takes the same
closed-loop loads: ``concurrency`` clients, each publishing a ``generate`` request to Kafka and the
next one as soon as its result is terminal, until ``requests`` have finished — once with 16
clients, once with 32, the running batch capped at ``max_running`` in both modes. Each request asks
for a different number of tokens (drawn once, with a fixed seed, between ``min_new_tokens`` and
``max_new_tokens``), so short and long generations share the batch: static batching holds every
member until the longest is done; continuous batching lets members leave and newcomers join
between steps.

Figures per mode: generated tokens per second over the run, time to first token (published →
first token, from each result's timings) and end-to-end latency, p50 and p99. ``raw`` is
:mod:`ops.bench.generate_raw` on the same prompts and budgets; ``stall`` is
:mod:`ops.bench.stall` (a long prompt joining a running batch, whole and chunked).
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
from ops.bench.generate_raw import raw_generate
from ops.bench.stall import StallPlan, measure_stall
from ops.stack import Stack, on_free_ports
from schemas.connections import kafka_options
from schemas.messages import ChatMessage, InferenceRequest, InferenceResult, ResultStatus, Role
from schemas.naming import requests_topic
from schemas.settings import Settings
from workers.core.runners import load_runner
from workers.core.runners.causal import CausalLM
from workers.store.store import DoneWatcher, ResultStore

MODEL = "smollm2-135m-instruct"
MODES = ("continuous", "static")


@dataclass(frozen=True)
class GeneratePlan:
    requests: int = 96
    concurrency: tuple[int, ...] = (16, 32)
    min_new_tokens: int = 8
    max_new_tokens: int = 256
    max_running: int = 32
    seed: int = 7
    stall: bool = True

    @classmethod
    def quick(cls) -> GeneratePlan:
        return cls(requests=32, concurrency=(8,), max_new_tokens=96, max_running=8, stall=False)

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


def chats(n: int, seed: int) -> list[tuple[ChatMessage, ...]]:
    """``n`` one-turn conversations of 1–14 corpus sentences (mixed prompt lengths)."""
    rng = random.Random(seed)
    texts = bench_texts(n, seed=seed, parts=(1, 2))
    return [
        (ChatMessage(role=Role.USER, content=" ".join([texts[i], *rng.sample(texts, rng.randint(0, 6))])),)
        for i in range(n)
    ]


def closed_loop(
    settings: Settings, plan: GeneratePlan, concurrency: int, prompts: Sequence[tuple[ChatMessage, ...]]
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
            messages=list(prompts[i % len(prompts)]),
            generation={"max_new_tokens": budgets[i], "temperature": 0.0},
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
    """Both modes, one after the other on the same cores, then the raw model and the stall;
    returns the figures and their ratios."""
    prompts = chats(plan.requests, plan.seed)
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
            warm = GeneratePlan(requests=4, min_new_tokens=4, max_new_tokens=16, seed=plan.seed + 1)
            closed_loop(gs, warm, 4, prompts)
            modes[mode] = {
                str(c): summarise(mode, closed_loop(gs, plan, c, prompts)).as_dict() for c in plan.concurrency
            }
        finally:
            stack.down()
    step(f"generate: the raw model, generate() in static batches of {plan.max_running}")
    runner = _in_process(settings)
    ids = [runner.render_chat(p) for p in prompts]
    raw = raw_generate(runner, ids, plan.budgets(), plan.max_running)
    ratios = {}
    for c in map(str, plan.concurrency):
        cont, static = modes["continuous"][c], modes["static"][c]
        ratios[c] = {
            "tokens_per_s": cont["tokens_per_s"] / static["tokens_per_s"] if static["tokens_per_s"] else None,
            "ttft_p50": static["ttft_p50_ms"] / cont["ttft_p50_ms"] if cont["ttft_p50_ms"] else None,
            "continuous_over_raw": cont["tokens_per_s"] / raw["tokens_per_s"],
            "static_over_raw": static["tokens_per_s"] / raw["tokens_per_s"],
        }
    data = {"model": MODEL, "version": runner.version, "plan": asdict(plan), "modes": modes, "raw": raw}
    data["continuous_over_static"] = ratios
    if plan.stall:
        step("generate: the prefill stall, a 1000-token prompt joining 8 running sequences")
        data["stall"] = measure_stall(runner, StallPlan())
    return data


def _in_process(settings: Settings) -> CausalLM:
    """The model in this process, on the worker's threads (one worker process's share of the cores)."""
    runner = load_runner(MODEL, settings)
    assert isinstance(runner, CausalLM)
    return runner


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
    raw = data.get("raw")
    if raw:
        t.add_row(
            "raw generate()",
            str(raw["batch"]),
            f"{raw['tokens_per_s']:.0f}",
            f"{raw['ttft_p50_ms']:.0f}",
            f"{raw['ttft_p99_ms']:.0f}",
            f"{raw['latency_p50_ms']:.0f}",
            f"{raw['latency_p99_ms']:.0f}",
            "0",
        )
    console.print(t)
    for c, r in data.get("continuous_over_static", {}).items():
        if r["tokens_per_s"] and r["ttft_p50"]:
            console.print(
                f"{c} in flight, continuous ÷ static: tokens/s × {r['tokens_per_s']:.2f}, "
                f"TTFT p50 ÷ {r['ttft_p50']:.1f}"
                + (
                    f"; continuous ÷ raw: × {r['continuous_over_raw']:.2f}"
                    if "continuous_over_raw" in r
                    else ""
                )
            )
    for s in data.get("stall", []):
        chunk = s["prefill_chunk_tokens"]
        how = (
            "whole"
            if not chunk
            else f"≤{chunk} tokens costing ≤{s['prefill_stall_steps']:g} steps"
            if s.get("prefill_stall_steps")
            else f"{chunk} tokens"
        )
        console.print(
            f"prefill stall, chunks {how}: {s['stall_ms']:.0f} ms "
            f"= {s['stall_steps']:.1f} decode steps of {s['decode_step_ms']:.0f} ms"
        )
