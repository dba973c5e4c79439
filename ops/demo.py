"""The demo: real texts through Kafka → intake → Celery → batched model → Redis, then a summary;
then a few chat answers from a real language model (smollm2-135m-instruct, continuous batching)."""

from __future__ import annotations

import json
import time
from collections import Counter
from importlib.resources import files
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from producers.client import InferqClient
from schemas.messages import (
    ClassifyOutput,
    EmbeddingOutput,
    GenerationOutput,
    InferenceRequest,
    InferenceResult,
    ResultStatus,
)
from schemas.settings import Settings


def demo_texts() -> list[str]:
    """The bundled corpus: a few hundred real user utterances."""
    text = files("ops").joinpath("data/demo_texts.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def demo_requests(n: int) -> list[InferenceRequest]:
    """``n`` requests over the corpus: two thirds ``embed``, one third ``classify``, every tenth a list."""
    texts = demo_texts()
    out = []
    for i in range(n):
        t = texts[i % len(texts)]
        inputs: str | list[str] = [t, texts[(i * 7 + 3) % len(texts)]] if i % 10 == 9 else t
        if i % 3 == 2:
            out.append(
                InferenceRequest(
                    task="classify", model="minilm-intent", inputs=inputs, tenant="demo", top_k=3
                )
            )
        else:
            out.append(InferenceRequest(task="embed", model="all-MiniLM-L6-v2", inputs=inputs, tenant="demo"))
    return out


def percentiles_ms(values: list[float]) -> dict[str, float]:
    """p50, p95 and p99 of ``values``, rounded to 0.1 ms (NaN when there are none)."""
    return {
        q: round(float(np.percentile(values, float(q[1:]))), 1) if values else float("nan")
        for q in ("p50", "p95", "p99")
    }


def publish_to_done_ms(result: InferenceResult) -> float | None:
    """Publish→done latency of a finished request, from its own timings."""
    t = result.timings
    if result.status is not ResultStatus.DONE or not (t.done_ms and t.published_ms):
        return None
    return t.done_ms - t.published_ms


def summarize(results: dict[str, InferenceResult], wall_s: float) -> dict[str, Any]:
    """Throughput, publish→done latency percentiles and batch sizes, from the results' timings."""
    rs = list(results.values())
    done = [r for r in rs if r.status is ResultStatus.DONE]
    lat = [ms for r in done if (ms := publish_to_done_ms(r)) is not None]
    texts = sum(len(r.outputs or []) for r in done)
    batches = [r.timings.batch_size for r in done if r.timings.batch_size]
    return {
        "requests": len(rs),
        "by_status": dict(Counter(r.status.value for r in rs)),
        "texts": texts,
        "wall_s": round(wall_s, 3),
        "requests_per_s": round(len(done) / wall_s, 1) if wall_s else None,
        "texts_per_s": round(texts / wall_s, 1) if wall_s else None,
        "latency_ms": percentiles_ms(lat),
        "batch_size": {
            "mean": round(float(np.mean(batches)), 1) if batches else None,
            "max": max(batches) if batches else None,
            "histogram": dict(sorted(Counter(batches).items())),
        },
        "model_versions": sorted({r.model_version for r in done if r.model_version}),
    }


LOW_LOAD_REQUESTS = 20


def one_in_flight(client: InferqClient, n: int) -> dict[str, float]:
    """Publish→done latency with one request in flight at a time (no queueing behind a burst)."""
    lat = []
    for i, text in enumerate(demo_texts()[:n]):
        task, model = ("classify", "minilm-intent") if i % 2 else ("embed", "all-MiniLM-L6-v2")
        ms = publish_to_done_ms(client.wait(client.submit(task, model, text), timeout_s=60))
        if ms is not None:
            lat.append(ms)
    return percentiles_ms(lat)


CHAT_MODEL = "smollm2-135m-instruct"
# questions a 135M model answers well (greedy); some others ("give me two tips for …") send it into
# a loop of repeated tokens, which is the model, not the serving
QUESTIONS = (
    "What is the capital of France?",
    "Why is the sky blue?",
    "What is a queue, in one sentence?",
    "Write a haiku about the sea.",
)


def generate_demo(client: InferqClient, n: int = 12) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """``n`` chat requests (smollm2-135m-instruct, greedy, different budgets) at once: continuous
    batching lets the short answers finish while the long ones run. Returns the figures and two
    (question, answer) samples."""
    ids, t0 = [], time.monotonic()
    for i in range(n):
        params = {"max_new_tokens": 48 + 32 * (i % 3), "temperature": 0.0}
        question = QUESTIONS[i % len(QUESTIONS)]
        ids.append(client.chat(CHAT_MODEL, [("user", question)], generation=params))
    results = client.wait_all(ids, timeout_s=300)
    wall_s = time.monotonic() - t0
    done = [results[rid] for rid in ids if results[rid].status is ResultStatus.DONE]
    outs = [o for r in done for o in r.outputs or [] if isinstance(o, GenerationOutput)]
    ttft = [
        r.timings.first_token_ms - (r.timings.published_ms or 0) for r in done if r.timings.first_token_ms
    ]
    figures = {
        "requests": n,
        "done": len(done),
        "tokens": sum(o.tokens for o in outs),
        "tokens_per_s": round(sum(o.tokens for o in outs) / wall_s, 1),
        "time_to_first_token_ms": percentiles_ms(ttft),
    }
    texts = {
        rid: out.text
        for rid in ids
        for out in (results[rid].outputs or [])[:1]
        if isinstance(out, GenerationOutput)
    }
    samples = [(QUESTIONS[i], texts[ids[i]]) for i in range(2) if ids[i] in texts]
    return figures, samples


def _print_generate(console: Console, g: dict[str, Any], samples: list[tuple[str, str]]) -> None:
    console.print(
        f"generate ({CHAT_MODEL}, continuous batching): {g['done']}/{g['requests']} done, "
        f"{g['tokens']} tokens, "
        f"{g['tokens_per_s']} tokens/s, time to first token p50 {g['time_to_first_token_ms']['p50']} ms"
    )
    for question, answer in samples:
        console.print(f"  chat {question!r} → {answer[:200]!r}")


def run_demo(settings: Settings, n: int, console: Console) -> dict[str, Any]:
    requests = demo_requests(n)
    with InferqClient(settings) as client:
        t0 = time.monotonic()
        for r in requests:
            client.publish(r)
        client.flush()
        cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*cols, console=console) as bar:
            task = bar.add_task("results", total=len(requests))
            results = client.wait_all(
                [r.request_id for r in requests], timeout_s=600, on_done=lambda _r: bar.advance(task)
            )
        wall_s = time.monotonic() - t0
        summary = summarize(results, wall_s)
        summary["one_in_flight_latency_ms"] = one_in_flight(client, LOW_LOAD_REQUESTS)
        summary["generate"], samples = generate_demo(client)
    _print(console, summary, requests, results)
    _print_generate(console, summary["generate"], samples)
    (settings.state_dir / "demo.json").write_text(json.dumps(summary, indent=2))
    return summary


def _print(
    console: Console, s: dict[str, Any], reqs: list[InferenceRequest], results: dict[str, InferenceResult]
) -> None:
    table = Table(title="inferq demo: Kafka → Celery → batched MiniLM → Redis")
    table.add_column("measure")
    table.add_column("value", justify="right")
    table.add_row("requests (texts)", f"{s['requests']} ({s['texts']})")
    table.add_row("status", ", ".join(f"{k}={v}" for k, v in s["by_status"].items()))
    table.add_row("wall time", f"{s['wall_s']} s")
    table.add_row("throughput", f"{s['requests_per_s']} req/s, {s['texts_per_s']} texts/s")
    fmt = "p50 {p50} ms, p95 {p95} ms, p99 {p99} ms"
    table.add_row("latency publish→done, all at once", fmt.format(**s["latency_ms"]))
    table.add_row(
        f"latency, one in flight (×{LOW_LOAD_REQUESTS})", fmt.format(**s["one_in_flight_latency_ms"])
    )
    table.add_row("batch size (texts)", f"mean {s['batch_size']['mean']}, max {s['batch_size']['max']}")
    table.add_row("model versions", ", ".join(s["model_versions"]))
    console.print(table)
    for r in reqs[:3]:
        res = results[r.request_id]
        out = res.outputs[0] if res.outputs else None
        text = r.texts()[0]
        if isinstance(out, EmbeddingOutput):
            norm = float(np.linalg.norm(out.embedding))
            console.print(f"  embed    {text!r}: dim {len(out.embedding)}, norm {norm:.4f}")
        elif isinstance(out, ClassifyOutput):
            labels = ", ".join(f"{x.label} {x.score:.2f}" for x in out.labels)
            console.print(f"  classify {text!r}: {labels}")
