"""The benchmark sequence, with progress: raw → inferq (saturation, sweep) → each peer (sweep).

Only one system runs at a time, so each gets the machine's cores to itself (inferq's broker,
Redis, intake and worker share them, as they would in production on one box).
"""

from __future__ import annotations

import os
import platform
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from ops.bench.ceiling import CeilingPlan, run_ceiling
from ops.bench.ceiling_report import print_ceiling
from ops.bench.corpus import bench_texts
from ops.bench.generate import GeneratePlan, bench_generate, print_generate
from ops.bench.load import InferqLoad, Level, http_level
from ops.bench.peers import PEERS, PeerServer, install
from ops.bench.raw import measure_again, measure_raw
from ops.bench.report import goals, plot, print_report, system_summary, write_json
from ops.stack import Stack, free_port, on_free_ports
from schemas.errors import InferqError
from schemas.settings import Settings
from workers.core.runners.device import threads_per_process
from workers.core.runners.embed import minilm_path

MODEL = "all-MiniLM-L6-v2"
# Not on the path Kafka → Redis. The log store and Prometheus run beside the pipeline, not on this
# box, in production; here the log store shares the broker's process and both would take the
# model's two cores. Processes still log (ECS on stderr); they just do not ship to Elasticsearch.
SKIPPED = {"api", "flower", "exporter", "prometheus"}


@dataclass(frozen=True)
class BenchPlan:
    levels: Sequence[int] = (1, 2, 4, 8, 16, 32, 64, 128)
    warmup_s: float = 2.0
    window_s: float = 6.0
    low_load_window_s: float = 15.0
    burst_texts: int = 2_000
    peers: Sequence[str] = ("infinity-emb", "ray-serve", "bentoml")
    generate: GeneratePlan | None = field(default_factory=GeneratePlan)
    embed: bool = True  # the raw / pipeline / peers part (off for a generation-only run)
    ceiling: CeilingPlan | None = field(default_factory=CeilingPlan)  # the pipeline's top speed (echo-384)

    @classmethod
    def quick(cls, peers: Sequence[str], generate: bool = True) -> BenchPlan:
        gen = GeneratePlan.quick() if generate else None
        return cls((1, 8, 32), 1.0, 3.0, 5.0, 400, peers, gen, ceiling=CeilingPlan.quick())


def run_bench(settings: Settings, plan: BenchPlan, out_dir: Path, console: Console) -> dict[str, Any]:
    texts = bench_texts(512)
    threads = threads_per_process(settings)
    steps = (2 + 2 + len(plan.levels) + len(plan.peers) * (2 + len(plan.levels))) * plan.embed
    steps += 2 if plan.generate else 0
    steps += plan.ceiling.steps((settings.intake_replicas, settings.worker_processes)) if plan.ceiling else 0
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
    )
    data: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "platform": platform.platform()},
        "plan": {k: _plain(v) for k, v in plan.__dict__.items()},
    }
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("bench", total=steps)

        def step(what: str, advance: int = 1) -> None:
            progress.update(task, description=what, advance=advance)

        if plan.embed:
            data.update(_bench_embed(settings, plan, texts, threads, step, progress, task))
            data["machine"]["device"] = data["raw"]["device"]
        if plan.generate:
            data["generate"] = bench_generate(settings, plan.generate, step)
        if plan.ceiling:
            data.update(run_ceiling(settings, plan.ceiling, out_dir, step))
    write_json(out_dir / "bench.json", data)
    if plan.embed:
        plot(out_dir / "bench.png", data)
        print_report(console, data)
    if plan.generate:
        print_generate(console, data["generate"])
    if plan.ceiling:
        print_ceiling(console, data)
    console.print(f"wrote {out_dir / 'bench.json'}" + (f" and {out_dir / 'bench.png'}" if plan.embed else ""))
    return data


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value.__dict__ if isinstance(value, GeneratePlan | CeilingPlan) else value


def _bench_embed(
    settings: Settings,
    plan: BenchPlan,
    texts: list[str],
    threads: int,
    step: Any,
    progress: Progress,
    task: Any,
) -> dict[str, Any]:
    """Raw model, the pipeline and the peers on all-MiniLM-L6-v2."""
    step("raw: tokenise + forward, length-sorted", 0)
    raw = measure_raw(settings, MODEL, texts, progress=lambda m: progress.update(task, description=m))
    step("inferq: starting the stack")
    inferq = _bench_inferq(settings, plan, texts, step)
    layout, size, swept = raw.best()
    step(f"raw: {layout}, batch {size} again")
    again = measure_again(settings, MODEL, texts, layout, size)
    peer_root = (settings.state_dir / "peers").resolve()
    peers = {name: _bench_peer(name, plan, texts, peer_root, threads, step) for name in plan.peers}
    data: dict[str, Any] = {
        "model": MODEL,
        "corpus": {"texts": len(texts), "mean_chars": sum(map(len, texts)) / len(texts)},
        "raw": {
            "device": raw.device,
            "seq_per_s_by_layout_and_batch": raw.layouts,
            "best_layout": layout,
            "best_batch_size": size,
            "best_swept_seq_per_s": swept,  # the sweep's largest figure (runs high: a max of several)
            "best_again_seq_per_s": again,  # measured again right after the pipeline's burst
            "batch1_p50_ms_by_threads": raw.batch1_ms,
            "batch1_p50_ms": raw.batch1_p50_ms,
        },
        "raw_best_seq_per_s": again,
        "pipeline_seq_per_s": inferq["saturation"]["steady_seq_per_s"],
        "low_load_p50_ms": inferq["summary"]["low_load_p50_ms"],
        "low_load_p99_ms": inferq["summary"]["low_load_p99_ms"],
        "inferq": inferq,
        "peers": peers,
    }
    data["goals"] = goals(
        data["raw_best_seq_per_s"],
        data["pipeline_seq_per_s"],
        raw.batch1_p50_ms,
        data["low_load_p50_ms"],
        data["low_load_p99_ms"],
    )
    data["ratio"] = data["goals"]["ratio"]
    return data


def _bench_inferq(settings: Settings, plan: BenchPlan, texts: list[str], step: Any) -> dict[str, Any]:
    bs = on_free_ports(settings, (settings.state_dir / "bench").resolve()).model_copy(
        update={"worker_models": MODEL, "log_ship": False}
    )
    stack = Stack(bs)
    if not any(svc["running"] for svc in stack.status().values()):
        # every run starts from an empty broker log and store: nothing left by earlier runs
        shutil.rmtree(stack.data_dir, ignore_errors=True)
    stack.up(only=[svc.name for svc in stack.services() if svc.name not in SKIPPED])
    load = InferqLoad(bs, MODEL)
    try:
        load.burst(texts[:64])  # warm every path (and the cost model) before measuring
        levels: list[Level] = []
        for c in plan.levels:  # lightest first: none inherits a heavier one's backlog or log
            step(f"inferq: {c} in flight")
            window = plan.low_load_window_s if c == min(plan.levels) else plan.window_s
            levels.append(load.run(c, texts, plan.warmup_s, window))
        step("inferq: saturation burst")
        n = plan.burst_texts
        # the raw figure's texts, unchanged (each request still has its own id)
        steady, whole, latencies = load.burst([texts[i % len(texts)] for i in range(n)])
    finally:
        load.close()
        stack.down()
    dicts = [lv.as_dict() for lv in levels]
    return {
        "saturation": {
            "texts": n,
            "steady_seq_per_s": steady,
            "whole_run_seq_per_s": whole,
            "p50_ms": float(np.percentile(latencies, 50)),
            "p99_ms": float(np.percentile(latencies, 99)),
        },
        "levels": dicts,
        "summary": system_summary(dicts),
        "settings": {
            k: str(v)
            for k, v in bs.model_dump().items()
            if k.startswith(("max_", "batch_", "target_", "transport_", "worker_", "torch_"))
        },
    }


def _bench_peer(
    name: str, plan: BenchPlan, texts: list[str], root: Path, threads: int, step: Any
) -> dict[str, Any]:
    peer = PEERS[name]
    root.mkdir(parents=True, exist_ok=True)
    entry: dict[str, Any] = {"requirements": list(peer.requirements), "levels": []}
    step(f"{name}: install (own venv)")
    server = None
    try:
        venv = install(peer, root, log=lambda m: step(m, 0))
        step(f"{name}: start")
        server = PeerServer(peer, venv, free_port(), minilm_path(), threads, root / f"{name}.log")
        server.wait_ready()
        payloads = [peer.payload(t) for t in texts]
        http_level(name, server.url, payloads, 8, 0.0, 2.0)  # warm-up
        for c in plan.levels:
            step(f"{name}: {c} in flight")
            window = plan.low_load_window_s if c == min(plan.levels) else plan.window_s
            entry["levels"].append(http_level(name, server.url, payloads, c, plan.warmup_s, window).as_dict())
    except (InferqError, OSError) as e:
        entry["error"] = str(e)
    finally:
        if server is not None:
            server.stop()
    entry["summary"] = system_summary(entry["levels"])
    return entry
