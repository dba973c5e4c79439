"""The ceiling bench's tables: the headline, CPU per request by process, the scaling, profiles."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from ops.bench.cputrace import TOTAL

GROUPS = ("client", "broker", "intake", "redis", "worker", "delivery", TOTAL)
SERVICES = ("intake", "worker", "redis", "broker")  # what a deployment sizes (the client is the user's)
GPU_SEQ_PER_S = (1_000, 5_000, 10_000, 14_000)  # 14k: MiniLM on one V100 (sentence-transformers)


def capacity(cpu_ms_per_request: dict[str, float]) -> dict[str, float]:
    """Requests/s one process of each service carries with a core to itself: 1000 ÷ its CPU ms per
    request (each is one Python process or single-threaded Redis: one core at most)."""
    return {
        g: 1000.0 / ms if ms > 0 else float("inf") for g, ms in cpu_ms_per_request.items() if g in SERVICES
    }


def needs(cpu_ms_per_request: dict[str, float], gpu_seq_per_s: float) -> dict[str, float]:
    """What a GPU computing ``gpu_seq_per_s`` one-text requests a second needs to stay busy, at
    these per-request costs: processes of each service (a fraction: the share of one it uses) and
    the cores of the whole pipeline, the client's included."""
    out = {g: gpu_seq_per_s / cap for g, cap in capacity(cpu_ms_per_request).items()}
    out["cores"] = gpu_seq_per_s * cpu_ms_per_request[TOTAL] / 1000.0
    return out


def print_ceiling(console: Console, data: dict[str, Any]) -> None:
    head = data["ceiling"]["headline"]
    t = Table(
        title=f"ceiling — {data['ceiling']['model']} (no compute), {head['intake_replicas']} intake × "
        f"{head['worker_processes']} worker process, {head['requests']} requests"
    )
    t.add_column("measure")
    t.add_column("value", justify="right")
    t.add_row("steady req/s (10th–90th pct of completions)", f"{head['req_per_s']:.0f}")
    t.add_row("whole burst req/s", f"{head['whole_burst_req_per_s']:.0f}")
    t.add_row("client publish req/s", f"{head['publish_req_per_s']:.0f}")
    t.add_row("CPU busy (cores, all processes)", f"{head['cpu_busy_cores']:.2f}")
    t.add_row("req/s the CPU per request allows on all cores, free", f"{head['cpu_bound_req_per_s']:.0f}")
    t.add_row("machine load average (1 min, at the end)", f"{head['load_avg_1m']:.1f}")
    t.add_row("lost / duplicated (all layouts)", f"{data['ceiling_lost']} / {data['ceiling_duplicated']}")
    if head.get("webhooks_received"):  # --ceiling-webhooks
        rate = head["webhooks_received"] / head["webhooks_s"] if head["webhooks_s"] else float("nan")
        t.add_row(
            "webhooks received / seconds to the last",
            f"{head['webhooks_received']} / {head['webhooks_s']:.1f}",
        )
        t.add_row("webhooks/s (first publish to last webhook)", f"{rate:.0f}")
        t.add_row("receiver CPU ms/request (in no group)", f"{head['receiver_cpu_ms_per_request']:.3f}")
    odd = {k: v for k, v in head["by_status"].items() if k != "done"}
    if odd:
        t.add_row("[red]not done[/red]", ", ".join(f"{k} {v}" for k, v in odd.items()))
    console.print(t)

    cpu = Table(title="CPU ms per request by process (whole burst; steady window beside it)")
    cpu.add_column("process")
    cpu.add_column("ms/request", justify="right")
    cpu.add_column("steady ms/request", justify="right")
    cpu.add_column("share", justify="right")
    cpu.add_column("cores busy", justify="right")
    total = head["cpu_ms_per_request"][TOTAL] or float("nan")
    for g in GROUPS:
        # .get: a run from before the delivery service was measured has no "delivery" group
        whole, steady = head["cpu_ms_per_request"].get(g, 0.0), head["steady_cpu_ms_per_request"].get(g, 0.0)
        busy = head["busy_cores_by_process"].get(g, head["cpu_busy_cores"])
        cpu.add_row(g, f"{whole:.3f}", f"{steady:.3f}", f"{100 * whole / total:.0f} %", f"{busy:.2f}")
    console.print(cpu)
    print_scaling(console, data["ceiling_scaling"])
    print_needs(console, head["cpu_ms_per_request"])
    for name, prof in head.get("profile", {}).items():
        print_profile(console, name, prof)


def print_scaling(console: Console, rows: list[dict[str, Any]]) -> None:
    t = Table(title="scaling: a fresh stack per layout (CPU ms per request, whole burst)")
    for col in ("intakes", "worker procs", "req/s", *GROUPS, "lost", "dup"):
        t.add_column(col, justify="right")
    for r in rows:
        ms = r["cpu_ms_per_request"]
        t.add_row(
            str(r["intake_replicas"]),
            str(r["worker_processes"]),
            f"{r['req_per_s']:.0f}",
            *(f"{ms.get(g, 0.0):.3f}" for g in GROUPS),
            str(r["lost"]),
            str(r["duplicated"]),
        )
    console.print(t)


def print_needs(console: Console, cpu_ms_per_request: dict[str, float]) -> None:
    cap = capacity(cpu_ms_per_request)
    t = Table(
        title="what a GPU needs at these costs: processes (a core each) to keep it busy; "
        + ", ".join(f"one {g} carries {cap[g]:.0f} req/s" for g in SERVICES)
    )
    for col in ("GPU seq/s", *SERVICES, "cores in all"):
        t.add_column(col, justify="right")
    for rate in GPU_SEQ_PER_S:
        n = needs(cpu_ms_per_request, rate)
        t.add_row(f"{rate:,}", *(f"{n[g]:.1f}" for g in SERVICES), f"{n['cores']:.1f}")
    console.print(t)


def print_profile(console: Console, name: str, prof: dict[str, Any]) -> None:
    t = Table(title=f"py-spy {name}: top self time ({prof['samples']} samples; {prof['file'] or 'no file'})")
    t.add_column("self %", justify="right")
    t.add_column("total %", justify="right")
    t.add_column("function (file)")
    for f in prof["top"]:
        t.add_row(f"{f['self_pct']:.1f}", f"{f['total_pct']:.1f}", f["function"])
    console.print(t)
