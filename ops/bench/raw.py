"""Raw model speed: tokenise + forward in a loop, no pipeline — the ceiling the pipeline is held to.

Texts are length-sorted before they are cut into batches (the best case for padding), through the
same runner the worker uses (:func:`workers.core.runners.load_runner`). Two layouts of the same cores are
measured and the better one is the ceiling: one process with every core as a torch thread, and
``worker_processes`` processes side by side with the cores shared out (what the stack runs).
Batch-1 compute is measured with one thread and with all, and the faster counts.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from schemas.settings import Settings
from workers.core.runners import load_runner
from workers.core.runners.base import Runner


@dataclass
class RawResult:
    model: str
    device: str
    layouts: dict[str, dict[int, float]] = field(default_factory=dict)  # layout → batch size → seq/s
    batch1_ms: dict[int, float] = field(default_factory=dict)  # threads → p50 of one text

    def best(self) -> tuple[str, int, float]:
        """(layout, batch size, seq/s) of the fastest measurement."""
        return max(
            ((lay, b, v) for lay, by in self.layouts.items() for b, v in by.items()), key=lambda x: x[2]
        )

    @property
    def batch1_p50_ms(self) -> float:
        return min(self.batch1_ms.values())


def _sorted(runner: Runner, texts: Sequence[str]) -> list[str]:
    return [t for _, t in sorted(zip(map(len, runner.tokenize(list(texts))), texts, strict=True))]


def _loop(runner: Runner, ordered: Sequence[str], size: int) -> tuple[float, list[float]]:
    """(seconds, per-call ms) for tokenise + forward over ``ordered`` in chunks of ``size``."""
    per_call = []
    start = time.perf_counter()
    for i in range(0, len(ordered), size):
        t0 = time.perf_counter()
        runner.forward(runner.tokenize(ordered[i : i + size]))
        per_call.append((time.perf_counter() - t0) * 1000.0)
    return time.perf_counter() - start, per_call


def measure_raw(
    settings: Settings,
    model: str,
    texts: Sequence[str],
    batch_sizes: Sequence[int] = (1, 8, 16, 32, 64),
    progress: Callable[[str], None] = lambda _: None,
) -> RawResult:
    runner = load_runner(model, settings)
    result = RawResult(model, runner.device)
    ordered = _sorted(runner, texts)
    cores = os.cpu_count() or 1
    single = f"1 process × {cores} threads"
    result.layouts[single] = {}
    for threads in sorted({1, cores}):
        torch.set_num_threads(threads)
        runner.forward(runner.tokenize(ordered[:8]))  # warm-up
        sample = ordered[:: max(1, len(ordered) // 150)]
        _, per_call = _loop(runner, sample, 1)
        result.batch1_ms[threads] = statistics.median(per_call)
    torch.set_num_threads(cores)
    for size in batch_sizes:
        progress(f"raw: {single}, batch {size}")
        chunk = ordered if size > 1 else ordered[:: max(1, len(ordered) // 150)]
        seconds, _ = _loop(runner, chunk, size)
        result.layouts[single][size] = len(chunk) / seconds
    procs = settings.worker_processes
    if procs > 1:
        threads = max(1, cores // procs)
        layout = f"{procs} processes × {threads} thread{'s' if threads > 1 else ''}"
        result.layouts[layout] = {}
        for size in [b for b in batch_sizes if b >= 16]:
            progress(f"raw: {layout}, batch {size}")
            result.layouts[layout][size] = _side_by_side(model, ordered, size, procs, threads)
    return result


def measure_again(settings: Settings, model: str, texts: Sequence[str], layout: str, size: int) -> float:
    """Seq/s of the sweep's best layout and batch size, measured once more, in fresh processes.

    The sweep's best is the largest of several noisy figures, so it runs high; this sample is not
    the one the choice was made on. The bench takes it in rounds, in alternation with the
    pipeline's burst (:mod:`ops.bench.trusted`), so drift of the machine lands on both sides. The
    loop runs in child processes each in its own session, as the stack's worker does: where the
    kernel shares the CPU between sessions (autogroup), a loop inside the bench's own session would
    get a different share of a busy machine than the worker it is compared with.
    """
    runner = load_runner(model, settings)
    ordered = _sorted(runner, texts)
    cores = os.cpu_count() or 1
    if layout.startswith("1 process"):
        return _side_by_side(model, ordered, size, 1, cores)
    procs = settings.worker_processes
    return _side_by_side(model, ordered, size, procs, max(1, cores // procs))


def _side_by_side(model: str, ordered: Sequence[str], size: int, procs: int, threads: int) -> float:
    """Seq/s of ``procs`` processes each looping over its share at once (wall clock of all)."""
    shares = [list(ordered[i::procs]) for i in range(procs)]
    children = [
        subprocess.Popen(
            [sys.executable, "-m", "ops.bench.raw", model, str(size), str(threads)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # its own CPU share, like each service of the stack
        )
        for _ in shares
    ]
    for child, share in zip(children, shares, strict=True):
        assert child.stdin is not None and child.stdout is not None
        child.stdin.write(json.dumps(share) + "\n")
        child.stdin.flush()
        child.stdout.readline()  # "ready": model loaded and warm
    for child in children:
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    spans = []
    for child in children:
        out, _ = child.communicate(timeout=600)
        spans.append(json.loads(out.strip().splitlines()[-1]))
    wall = max(s["end"] for s in spans) - min(s["start"] for s in spans)
    return len(ordered) / wall


def _child(model: str, size: int, threads: int) -> None:
    from schemas.settings import get_settings

    settings = get_settings().model_copy(update={"torch_threads": threads})
    runner = load_runner(model, settings)
    torch.set_num_threads(threads)
    share: list[str] = json.loads(sys.stdin.readline())
    runner.forward(runner.tokenize(share[:8]))
    print("ready", flush=True)
    sys.stdin.readline()
    start = time.time()
    _loop(runner, share, size)
    out: dict[str, Any] = {"start": start, "end": time.time()}
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
