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
from ops.bench.corpus import bench_texts, corpus_summary, mixed_texts
from ops.bench.generate import GeneratePlan, bench_generate, print_generate
from ops.bench.load import InferqLoad, Level, http_level
from ops.bench.padding import BatchLog, summarise_padding
from ops.bench.peers import PEERS, PeerServer, install
from ops.bench.raw import RawResult, measure_again, measure_raw
from ops.bench.report import (
    deciding_levels,
    goals,
    peer_goals,
    plot,
    print_report,
    system_summary,
    write_json,
)
from ops.bench.trusted import interleave
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
    mixed: bool = True  # the same again on the mixed-length corpus (``bench.json`` ``mixed``)
    ratio_rounds: int = 5  # raw / pipeline rounds, in alternation, behind ``ratio``
    peer_rounds: int = 3  # inferq / peer rounds at the deciding levels

    @classmethod
    def quick(cls, peers: Sequence[str], generate: bool = True) -> BenchPlan:
        return cls(
            (1, 8, 32),
            1.0,
            3.0,
            5.0,
            400,
            peers,
            GeneratePlan.quick() if generate else None,
            ceiling=CeilingPlan.quick(),
            ratio_rounds=3,
            peer_rounds=2,
        )


def run_bench(settings: Settings, plan: BenchPlan, out_dir: Path, console: Console) -> dict[str, Any]:
    texts = bench_texts(512)
    threads = threads_per_process(settings)
    per_corpus = 2 + 2 + 2 * plan.ratio_rounds + len(plan.levels)
    per_corpus += len(plan.peers) * (2 + len(plan.levels) + 2 * plan.peer_rounds)
    steps = per_corpus * (1 + plan.mixed) * plan.embed
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
            data.update(_bench_embed(settings, plan, texts, threads, step))
            data["machine"]["device"] = data["raw"]["device"]
            if plan.mixed:
                data["mixed"] = _bench_embed(settings, plan, mixed_texts(512), threads, step, "mixed: ")
        if plan.generate:
            data["generate"] = bench_generate(settings, plan.generate, step)
        if plan.ceiling:
            data.update(run_ceiling(settings, plan.ceiling, out_dir, step))
    write_json(out_dir / "bench.json", data)
    if plan.embed:
        plot(out_dir / "bench.png", data)
        print_report(console, data)
        if "mixed" in data:
            print_report(console, {**data["mixed"], "machine": data["machine"]}, "mixed-length corpus")
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
    settings: Settings, plan: BenchPlan, texts: list[str], threads: int, step: Any, label: str = ""
) -> dict[str, Any]:
    """Raw model, the pipeline and the peers on all-MiniLM-L6-v2, on one corpus."""
    step(f"{label}raw: tokenise + forward, length-sorted", 0)
    raw = measure_raw(settings, MODEL, texts, progress=lambda m: step(label + m, 0))
    step(f"{label}inferq: starting the stack")
    peer_root = (settings.state_dir / "peers").resolve()
    run = _InferqRun(settings, plan, texts, lambda m, n=1: step(label + m, n))
    inferq = run.measure(raw, peer_root, threads)
    peers = inferq.pop("peers")
    trusted = inferq.pop("ratio_rounds")
    layout, size, swept = raw.best()
    data: dict[str, Any] = {
        "model": MODEL,
        "corpus": corpus_summary(texts),
        "raw": {
            "device": raw.device,
            "seq_per_s_by_layout_and_batch": raw.layouts,
            "best_layout": layout,
            "best_batch_size": size,
            "best_swept_seq_per_s": swept,  # the sweep's largest figure (runs high: a max of several)
            "batch1_p50_ms_by_threads": raw.batch1_ms,
            "batch1_p50_ms": raw.batch1_p50_ms,
        },
        # medians of the rounds measured in alternation (raw, pipeline, raw, …) with the stack up
        "raw_best_seq_per_s": trusted["raw_median"],
        "pipeline_seq_per_s": trusted["pipeline_median"],
        "ratio_runs": trusted["ratio_runs"],
        "ratio_spread": trusted["ratio_spread"],
        "raw_runs_seq_per_s": trusted["raw_runs"],
        "pipeline_runs_seq_per_s": trusted["pipeline_runs"],
        "low_load_p50_ms": inferq["summary"]["low_load_p50_ms"],
        "low_load_p99_ms": inferq["summary"]["low_load_p99_ms"],
        "padding_waste": inferq["padding_waste"],
        "inferq": inferq,
        "peers": peers,
    }
    data["goals"] = goals(
        data["raw_best_seq_per_s"],
        data["pipeline_seq_per_s"],
        raw.batch1_p50_ms,
        data["low_load_p50_ms"],
        data["low_load_p99_ms"],
        ratio=trusted["ratio"],
    )
    data["ratio"] = data["goals"]["ratio"]
    data["goals"].update(peer_goals(peers))
    return data


class _InferqRun:
    """inferq's stack for one corpus: the sweep, the saturation burst, the raw / pipeline rounds,
    then each peer beside the idle stack, in alternation with inferq at the levels that decide."""

    def __init__(self, settings: Settings, plan: BenchPlan, texts: list[str], step: Any) -> None:
        self.plan, self.texts, self.step = plan, texts, step
        self.settings = on_free_ports(settings, (settings.state_dir / "bench").resolve()).model_copy(
            update={"worker_models": MODEL, "log_ship": False}
        )
        self.burst = [texts[i % len(texts)] for i in range(plan.burst_texts)]  # the raw figure's texts

    def measure(self, raw: RawResult, peer_root: Path, threads: int) -> dict[str, Any]:
        bs, plan = self.settings, self.plan
        stack = Stack(bs)
        if not any(svc["running"] for svc in stack.status().values()):
            # every run starts from an empty broker log and store: nothing left by earlier runs
            shutil.rmtree(stack.data_dir, ignore_errors=True)
        stack.up(only=[svc.name for svc in stack.services() if svc.name not in SKIPPED])
        load = InferqLoad(bs, MODEL)
        batches = BatchLog(stack.log_dir)
        try:
            load.burst(self.texts[:64])  # warm every path (and the cost model) before measuring
            batches.mark()
            levels: list[Level] = []
            for c in plan.levels:  # lightest first: none inherits a heavier one's backlog or log
                self.step(f"inferq: {c} in flight")
                window = plan.low_load_window_s if c == min(plan.levels) else plan.window_s
                levels.append(load.run(c, self.texts, plan.warmup_s, window))
            self.step("inferq: saturation burst")
            steady, whole, latencies = load.burst(self.burst)
            layout, size, _ = raw.best()
            rounds = interleave(
                "raw",
                lambda: measure_again(bs, MODEL, self.texts, layout, size),
                "pipeline",
                lambda: load.burst(self.burst)[0],
                plan.ratio_rounds,
                lambda m: self.step(m),
            )
            padding = summarise_padding(batches.since_mark())
            dicts = [lv.as_dict() for lv in levels]
            peers = {name: self._peer(name, load, dicts, peer_root, threads) for name in plan.peers}
        finally:
            load.close()
            stack.down()
        return {
            "saturation": {
                "texts": len(self.burst),
                "steady_seq_per_s": steady,
                "whole_run_seq_per_s": whole,
                "p50_ms": float(np.percentile(latencies, 50)),
                "p99_ms": float(np.percentile(latencies, 99)),
            },
            "levels": dicts,
            "summary": system_summary(dicts),
            "padding_waste": padding,
            "ratio_rounds": rounds.as_dict(),
            "peers": peers,
            "settings": {
                k: str(v)
                for k, v in bs.model_dump().items()
                if k.startswith(("max_", "batch_", "target_", "transport_", "worker_", "torch_"))
            },
        }

    def _peer(
        self, name: str, load: InferqLoad, inferq_levels: list[dict[str, Any]], root: Path, threads: int
    ) -> dict[str, Any]:
        entry = _bench_peer(name, self.plan, self.texts, root, threads, self.step, keep=True)
        server = entry.pop("server", None)
        if server is None:
            return entry
        try:
            payloads = [server.peer.payload(t) for t in self.texts]
            window, vs = self.plan.window_s, {}
            for c in deciding_levels(inferq_levels, entry["levels"]):

                def peer_rate(c: int = c) -> float:
                    return http_level(name, server.url, payloads, c, 1.0, window).throughput_per_s

                def inferq_rate(c: int = c) -> float:
                    return load.run(c, self.texts, 1.0, window).throughput_per_s

                def say(m: str, c: int = c) -> None:
                    self.step(f"{m} at {c} in flight")

                rounds = interleave(name, peer_rate, "inferq", inferq_rate, self.plan.peer_rounds, say)
                vs[str(c)] = rounds.as_dict()  # ratio = inferq ÷ peer
            entry["vs_inferq"] = vs
        except (InferqError, OSError) as e:
            entry["error"] = str(e)
        finally:
            server.stop()
        return entry


def _bench_peer(
    name: str, plan: BenchPlan, texts: list[str], root: Path, threads: int, step: Any, keep: bool = False
) -> dict[str, Any]:
    """One peer's sweep; with ``keep`` its server is left running, in ``entry["server"]``."""
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
    except BaseException:
        if server is not None:
            server.stop()
        raise
    if server is not None and keep and "error" not in entry:
        entry["server"] = server
    elif server is not None:
        server.stop()
    entry["summary"] = system_summary(entry["levels"])
    return entry
