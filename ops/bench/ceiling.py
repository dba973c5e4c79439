"""The ceiling bench: the pipeline's own top speed, with a model that costs nothing.

A fresh stack serves only ``echo-384`` (no compute, MiniLM-shaped outputs), so what limits it is the
pipeline: the client publishing to Kafka, the broker, the intake(s), Redis and the worker(s). A
burst goes in through Kafka and out through Redis (:mod:`ops.bench.loadgen`: the load generator and
the result collector are processes of their own); meanwhile every process's CPU is sampled from /proc
(:mod:`ops.bench.cputrace`). Reported per layout (intake replicas × worker processes, a fresh stack
each):

* steady requests/s: completions between the 10th and 90th percentile of completion times;
* CPU milliseconds per request by process group — over the *whole burst* (the first publish to the
  last completion, divided by the burst's requests: the client publishes ahead of the pipeline, so
  only the whole burst holds all of its work) and, beside it, over the steady window;
* lost (never terminal) and duplicated (announced twice) requests: both must be 0.

Each layout's burst is sized from a short warm-up burst's rate, to last about ``burst_s``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import SecretStr
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from ops.bench.ceiling_report import capacity, print_ceiling
from ops.bench.corpus import bench_texts
from ops.bench.cputrace import CpuTrace, Window, per_request, steady_window
from ops.bench.loadgen import Collected, LoadPool, Published
from ops.bench.procstat import all_stats, tree_ms
from ops.bench.pyspy import record_all, top_of_file
from ops.bench.receiver import WebhookReceiver
from ops.bench.report import write_json
from ops.stack import Stack, on_free_ports
from schemas.errors import StackError
from schemas.settings import Settings

MODEL = "echo-384"
SKIPPED = {"api", "flower", "exporter", "prometheus"}  # off the path Kafka → Redis (as in run.py)
GROUPS = ("client", "broker", "intake", "redis", "worker", "delivery")
Step = Callable[[str], None]


@dataclass(frozen=True)
class CeilingPlan:
    burst_s: float = 20.0  # the headline layout's burst, at the rate its warm-up reached
    scaling_burst_s: float = 6.0  # each other layout's
    warm_requests: int = 1_000
    min_requests: int = 2_000
    max_requests: int = 60_000  # results stay in Redis (~8 kB each in JSON): a bound on its memory
    generators: int = 1  # load-generator processes
    layouts: Sequence[tuple[int, int]] = ((1, 1), (2, 1), (1, 2), (2, 2))  # (intakes, worker processes)
    profile: bool = False  # py-spy on the intake(s) and worker(s) during the headline burst
    webhooks: bool = False  # every request names a callback_url to a local HTTPS receiver

    @classmethod
    def quick(cls) -> CeilingPlan:
        """Shorter bursts and two layouts (a smoke run; the full bench's ``--quick``)."""
        return cls(6.0, 3.0, 300, 500, layouts=((1, 1), (2, 2)))

    @classmethod
    def tiny(cls, profile: bool = False) -> CeilingPlan:
        """A smoke run: one layout, a few hundred requests (tests)."""
        return cls(1.0, 1.0, 100, 300, 600, 1, ((1, 1),), profile)

    def steps(self, headline: tuple[int, int]) -> int:
        return 1 + sum(1 for lay in self.layouts if lay != headline)


@dataclass
class LayoutRun:
    """One layout's burst: throughput, CPU by group, and what arrived."""

    intake_replicas: int
    worker_processes: int
    requests: int
    req_per_s: float
    whole_burst_req_per_s: float
    publish_req_per_s: float
    burst_s: float
    cpu_ms_per_request: dict[str, float]
    steady_cpu_ms_per_request: dict[str, float]
    cpu_busy_cores: float  # all groups' CPU over the burst ÷ its wall time
    busy_cores_by_process: dict[str, float]  # each group's: near 1.0 per process = that one is the limit
    load_avg_1m: float  # the machine's load average as the burst ended: others' work shares the cores
    cpu_bound_req_per_s: float  # what the CPU per request allows on this machine's cores, all free
    lost: int
    duplicated: int
    by_status: dict[str, int]
    profile: dict[str, Any] = field(default_factory=dict)
    stack_up_s: float = 0.0  # starting this layout's stack (not part of any figure)
    # webhooks-on runs (CeilingPlan.webhooks): POSTs the receiver got for this burst, seconds from
    # the first publish to the last of them (the delivery group's CPU is counted up to then), and
    # the receiver's own CPU per request (apart: in no group, no total)
    webhooks_received: int = 0
    webhooks_s: float = 0.0
    receiver_cpu_ms_per_request: float = 0.0

    def scaling_row(self) -> dict[str, Any]:
        return {
            "intake_replicas": self.intake_replicas,
            "worker_processes": self.worker_processes,
            "req_per_s": self.req_per_s,
            "cpu_ms_per_request": self.cpu_ms_per_request,
            "requests": self.requests,
            "lost": self.lost,
            "duplicated": self.duplicated,
        }


def bench_ceiling(settings: Settings, plan: CeilingPlan, out_dir: Path, console: Console) -> dict[str, Any]:
    """``inferq-ops bench --ceiling``: the ceiling alone, its tables, and ``bench.json``."""
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("ceiling", total=None)
        data = run_ceiling(settings, plan, out_dir, lambda m: progress.update(task, description=m))
    write_json(out_dir / "bench.json", data)
    print_ceiling(console, data)
    console.print(f"wrote {out_dir / 'bench.json'}")
    return data


def run_ceiling(
    settings: Settings, plan: CeilingPlan, out_dir: Path, step: Step | None = None
) -> dict[str, Any]:
    """Every layout of ``plan`` on a fresh stack; the headline is the settings' own layout
    (``INFERQ_INTAKE_REPLICAS`` × ``INFERQ_WORKER_PROCESSES``), measured with the longer burst."""
    step = step or (lambda _msg: None)
    headline = (settings.intake_replicas, settings.worker_processes)
    runs: list[LayoutRun] = []
    with LoadPool(bench_texts(512), plan.generators) as pool:
        for layout in [headline, *(lay for lay in plan.layouts if lay != headline)]:
            burst_s = plan.burst_s if layout == headline else plan.scaling_burst_s
            step(f"ceiling: {layout[0]} intake × {layout[1]} worker, {burst_s:.0f} s burst")
            profile_dir = out_dir if plan.profile and layout == headline else None
            runs.append(measure_layout(settings, layout, burst_s, plan, pool, profile_dir))
    main = runs[0]
    runs.sort(key=lambda r: (r.intake_replicas, r.worker_processes))
    return {
        "ceiling_req_per_s": main.req_per_s,
        "ceiling_cpu_ms_per_request": main.cpu_ms_per_request,
        "ceiling_lost": sum(r.lost for r in runs),
        "ceiling_duplicated": sum(r.duplicated for r in runs),
        "ceiling_scaling": [r.scaling_row() for r in runs],
        "ceiling_capacity_req_per_s": capacity(main.cpu_ms_per_request),
        "ceiling_cpu_bound_req_per_s": main.cpu_bound_req_per_s,
        "ceiling": {
            "model": MODEL,
            "cpu_window": "whole burst: first publish to last completion (steady_* : 10th-90th pct)",
            "plan": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan).items()},
            "headline": asdict(main),
            "layouts": [asdict(r) for r in runs],
        },
    }


def measure_layout(
    settings: Settings,
    layout: tuple[int, int],
    burst_s: float,
    plan: CeilingPlan,
    pool: LoadPool,
    profile_dir: Path | None,
) -> LayoutRun:
    """A fresh stack of ``layout``: a warm-up burst (sizes the real one), then the measured burst."""
    intakes, workers = layout
    bs = on_free_ports(settings, (settings.state_dir / "ceiling").resolve()).model_copy(
        update={
            "worker_models": MODEL,
            "log_ship": False,
            "intake_replicas": intakes,
            "worker_processes": workers,
        }
    )
    with contextlib.ExitStack() as hooks:
        receiver = None
        if plan.webhooks:
            receiver = hooks.enter_context(WebhookReceiver(bs.state_dir / "bench-webhooks"))
            bs = bs.model_copy(update=webhook_settings(receiver))
        run = _measure(bs, burst_s, plan, pool, profile_dir, receiver)
    run.intake_replicas, run.worker_processes = intakes, workers
    return run


def webhook_settings(receiver: WebhookReceiver) -> dict[str, Any]:
    """The bench stack's settings that let its requests' callbacks reach ``receiver``."""
    return {
        "webhook_allow_hosts": "127.0.0.0/8",
        "webhook_allow_ports": "*",
        "webhook_keys": SecretStr(f":bench-{secrets.token_hex(16)}"),
        "webhook_ca_certs": str(receiver.ca_file),
    }


def _measure(
    bs: Settings,
    burst_s: float,
    plan: CeilingPlan,
    pool: LoadPool,
    profile_dir: Path | None,
    receiver: WebhookReceiver | None,
) -> LayoutRun:
    stack = Stack(bs)
    _discard(stack)  # what a run that crashed left in this folder (pids checked by start time)
    shutil.rmtree(stack.data_dir, ignore_errors=True)  # an empty broker log and store each time
    try:
        t_up = time.monotonic()
        stack.up(only=[svc.name for svc in stack.services() if svc.name not in SKIPPED])
        t_up = time.monotonic() - t_up
        warm = _burst(bs, stack, pool, plan.warm_requests, None, 60.0 + plan.warm_requests / 20, receiver)
        rate = max(warm.req_per_s, 50.0)
        n = int(min(max(rate * burst_s, plan.min_requests), plan.max_requests))
        run = _burst(bs, stack, pool, n, None, 60.0 + 5 * n / rate, receiver)
        if profile_dir is not None:  # a burst of its own: py-spy's CPU would lower the figures above
            m = max(n // 2, plan.min_requests)
            run.profile = _burst(bs, stack, pool, m, profile_dir, 60.0 + 5 * m / rate, receiver).profile
    finally:
        _discard(stack)
    run.stack_up_s = t_up
    return run


def _discard(stack: Stack) -> None:
    """Stop the stack at once (SIGKILL): its data is thrown away, so no graceful stop is owed."""
    for name, st in stack.status().items():
        if st["running"]:
            with contextlib.suppress(StackError, ProcessLookupError):
                stack.kill(name)
    stack.down(timeout_s=5.0)


def _groups(stack: Stack, clients: list[int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {g: [] for g in GROUPS}
    out["client"] = clients
    for name in stack.status():
        pid = stack.pid(name)
        kind = name.split("-")[0]
        if pid is not None and kind in out:
            out[kind].append(pid)
    return out


def _burst(
    settings: Settings,
    stack: Stack,
    pool: LoadPool,
    n: int,
    profile_dir: Path | None,
    timeout_s: float,
    receiver: WebhookReceiver | None = None,
) -> LayoutRun:
    """One burst of ``n``; with a ``receiver``, also until it got every request's webhook (or
    ``timeout_s`` more), so the next burst starts with no deliveries behind."""
    pool.prepare(settings, MODEL, n, timeout_s, callback_url=receiver.url if receiver else None)
    hooks = _Hooks(receiver, n)
    trace = CpuTrace(_groups(stack, pool.pids))
    trace.start()
    profiled = {
        name: pid
        for name in stack.status()
        if name.startswith(("intake", "worker"))
        for pid in [stack.pid(name)]
        if pid is not None
    }
    profiled.update(pool.named_pids())  # the client's processes too (its publishing costs count)
    recordings = record_all(profiled, profile_dir / "ceiling-profile") if profile_dir else []
    try:
        t0 = pool.go()
        published, collected = pool.wait()
        hooks.wait(timeout_s)
    finally:
        trace.stop()
        files = {r.name: r.stop() for r in recordings}
    run = _summarise(n, t0, trace, published, collected, files, hooks.done_at)
    return hooks.fill(run, t0)


class _Hooks:
    """A burst's webhooks at the receiver: how many came and when the last did; its CPU apart."""

    def __init__(self, receiver: WebhookReceiver | None, n: int) -> None:
        self.receiver, self.n = receiver, n
        self.first = receiver.received if receiver else 0
        self.cpu0 = tree_ms([receiver.pid], all_stats()) if receiver else 0.0
        self.done_at: float | None = None

    def wait(self, timeout_s: float) -> None:
        if self.receiver is None:
            return
        give_up = time.monotonic() + timeout_s
        while self.receiver.received - self.first < self.n and time.monotonic() < give_up:
            time.sleep(0.02)
        self.done_at = time.monotonic()

    def fill(self, run: LayoutRun, t0: float) -> LayoutRun:
        if self.receiver is None or self.done_at is None:
            return run
        run.webhooks_received = self.receiver.received - self.first
        run.webhooks_s = self.done_at - t0
        cpu = tree_ms([self.receiver.pid], all_stats()) - self.cpu0
        run.receiver_cpu_ms_per_request = cpu / self.n
        return run


def _summarise(
    n: int,
    t0: float,
    trace: CpuTrace,
    published: list[Published],
    collected: Collected,
    profiles: dict[str, Path | None],
    hooks_done_at: float | None = None,
) -> LayoutRun:
    if not collected.done_at:
        raise RuntimeError(f"no result of the {n} published requests came back")
    end = max(collected.done_at)
    window: Window = steady_window(collected.done_at)
    whole = trace.between(t0, end)
    busy_s = {g: end - t0 for g in whole}
    if hooks_done_at is not None:  # the delivery service works on after the last result: its CPU till done
        whole["delivery"] = trace.between(t0, max(end, hooks_done_at))["delivery"]
        busy_s["delivery"] = max(end, hooks_done_at) - t0
    pub_s = max(p.t1 for p in published) - min(p.t0 for p in published)
    profile: dict[str, Any] = {}
    for name, path in profiles.items():
        samples, top = top_of_file(path) if path else (0, [])
        profile[name] = {
            "file": str(path) if path else None,
            "samples": samples,
            "top": [asdict(f) for f in top],
        }
    return LayoutRun(
        intake_replicas=0,
        worker_processes=0,
        requests=n,
        req_per_s=window.rate_per_s,
        whole_burst_req_per_s=len(collected.done_at) / (end - t0),
        publish_req_per_s=sum(p.requests for p in published) / pub_s if pub_s > 0 else float("nan"),
        burst_s=end - t0,
        cpu_ms_per_request=per_request(whole, n),
        steady_cpu_ms_per_request=per_request(trace.between(window.t0, window.t1), window.completions),
        cpu_busy_cores=sum(whole.values()) / 1000.0 / (end - t0),
        busy_cores_by_process={g: ms / 1000.0 / busy_s[g] for g, ms in whole.items()},
        load_avg_1m=os.getloadavg()[0],
        cpu_bound_req_per_s=(os.cpu_count() or 1) * 1000.0 / (sum(whole.values()) / n),
        lost=collected.lost,
        duplicated=collected.duplicated,
        by_status=collected.by_status,
        profile=profile,
    )
