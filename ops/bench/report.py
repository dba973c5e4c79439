"""The benchmark's outputs: a table on the console, ``bench.json`` and a PNG plot."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

RATIO_GOAL = 0.90  # pipeline ÷ raw best-batch throughput
LOW_LOAD_SLACK_MS = 15.0  # p50 at one in flight ≤ batch-1 compute + this
P99_OVER_P50_GOAL = 2.0


def goals(
    raw_best: float,
    pipeline: float,
    batch1_ms: float,
    p50_ms: float,
    p99_ms: float,
    ratio: float | None = None,
) -> dict[str, Any]:
    """The goals met or not; ``ratio`` (the median of rounds in alternation) when given, else
    ``pipeline ÷ raw_best``."""
    if ratio is None:
        ratio = pipeline / raw_best if raw_best else float("nan")
    return {
        "ratio": ratio,
        "ratio_goal": RATIO_GOAL,
        "ratio_met": ratio >= RATIO_GOAL,
        "low_load_p50_goal_ms": batch1_ms + LOW_LOAD_SLACK_MS,
        "low_load_p50_met": p50_ms <= batch1_ms + LOW_LOAD_SLACK_MS,
        "low_load_p99_goal_ms": P99_OVER_P50_GOAL * p50_ms,
        "low_load_p99_met": p99_ms <= P99_OVER_P50_GOAL * p50_ms,
    }


def deciding_levels(inferq: list[dict[str, Any]], peer: list[dict[str, Any]]) -> list[int]:
    """The concurrencies that decide a comparison: where each system reached its best throughput."""
    best = [
        max(ok, key=lambda lv: lv["throughput_per_s"])["concurrency"]
        for ok in ([lv for lv in levels if lv["completed"]] for levels in (inferq, peer))
        if ok
    ]
    return sorted(set(best))


def peer_goals(peers: dict[str, Any]) -> dict[str, Any]:
    """inferq ahead of each peer: the median of inferq ÷ peer over rounds in alternation, at every
    deciding level (no rounds, e.g. the peer failed: not counted)."""
    medians = {
        name: min(r["ratio"] for r in entry["vs_inferq"].values())
        for name, entry in peers.items()
        if entry.get("vs_inferq")
    }
    return {"ahead_of_peers_by": medians, "ahead_of_every_peer": all(m > 1.0 for m in medians.values())}


def system_summary(levels: list[dict[str, Any]]) -> dict[str, Any]:
    """Best throughput over the sweep, and latency at the lowest and highest concurrency."""
    ok = [lv for lv in levels if lv["completed"]]
    if not ok:
        return {}
    low, high = min(ok, key=lambda lv: lv["concurrency"]), max(ok, key=lambda lv: lv["concurrency"])
    return {
        "max_throughput_per_s": max(lv["throughput_per_s"] for lv in ok),
        "low_load_p50_ms": low["p50_ms"],
        "low_load_p99_ms": low["p99_ms"],
        "high_load_concurrency": high["concurrency"],
        "high_load_p50_ms": high["p50_ms"],
        "high_load_p99_ms": high["p99_ms"],
        "errors": sum(lv["errors"] for lv in levels),
    }


def print_report(console: Console, data: dict[str, Any], corpus: str = "~40-token corpus") -> None:
    g = data["goals"]
    head = Table(title=f"inferq bench — {data['model']} on {data['machine']['device']}, {corpus}")
    head.add_column("measure")
    head.add_column("value", justify="right")
    head.add_column("goal", justify="right")
    head.add_row(
        "raw best-batch (seq/s)",
        f"{data['raw_best_seq_per_s']:.1f}",
        f"{data['raw']['best_layout']}, batch {data['raw']['best_batch_size']}"
        f" (sweep: {data['raw']['best_swept_seq_per_s']:.1f}"
        + (f"; median of {len(data['ratio_runs'])} rounds)" if data.get("ratio_runs") else ")"),
    )
    head.add_row("raw batch-1 compute p50 (ms)", f"{data['raw']['batch1_p50_ms']:.1f}", "")
    head.add_row("pipeline at saturation (seq/s)", f"{data['pipeline_seq_per_s']:.1f}", "")
    spread = data.get("ratio_spread") or {}
    head.add_row(
        "ratio (median of rounds)",
        f"{data['ratio']:.3f}" + (f" [{spread['min']:.2f}–{spread['max']:.2f}]" if spread else ""),
        _mark(g["ratio_met"], f"≥ {g['ratio_goal']:.2f}"),
    )
    waste = data.get("padding_waste") or {}
    if waste.get("batches"):
        head.add_row(
            "padding waste, mean / max over batches",
            f"{waste['mean']:.1%} / {waste['max']:.1%}",
            f"{waste['batches']} batches; {waste['token_share']:.1%} of tokens",
        )
    head.add_row(
        "low load p50 (ms)",
        f"{data['low_load_p50_ms']:.1f}",
        _mark(g["low_load_p50_met"], f"≤ {g['low_load_p50_goal_ms']:.1f}"),
    )
    head.add_row(
        "low load p99 (ms)",
        f"{data['low_load_p99_ms']:.1f}",
        _mark(g["low_load_p99_met"], f"≤ {g['low_load_p99_goal_ms']:.1f}"),
    )
    console.print(head)

    side = Table(title="closed loop, same load for every system (one text per request)")
    for col in (
        "system",
        "max seq/s",
        "p50 @1 (ms)",
        "p99 @1 (ms)",
        "p50 @max (ms)",
        "p99 @max (ms)",
        "errors",
        "inferq ÷ it",
    ):
        side.add_column(col, justify="left" if col == "system" else "right")
    systems = {"inferq": data["inferq"], **data["peers"]}
    for name, entry in systems.items():
        s = entry.get("summary") or {}
        if not s:
            side.add_row(name, f"[red]{entry.get('error', 'no data')}[/red]", "", "", "", "", "", "")
            continue
        vs = entry.get("vs_inferq") or {}
        ahead = ", ".join(
            f"{r['ratio']:.2f} [{r['ratio_spread'].get('min', 0):.2f}–{r['ratio_spread'].get('max', 0):.2f}]"
            f" @{c}"
            for c, r in vs.items()
        )
        side.add_row(
            name,
            f"{s['max_throughput_per_s']:.1f}",
            f"{s['low_load_p50_ms']:.1f}",
            f"{s['low_load_p99_ms']:.1f}",
            f"{s['high_load_p50_ms']:.0f} (@{s['high_load_concurrency']})",
            f"{s['high_load_p99_ms']:.0f}",
            str(s["errors"]),
            ahead,
        )
    console.print(side)


def _mark(ok: bool, text: str) -> str:
    return f"[green]{text} ✓[/green]" if ok else f"[red]{text} ✗[/red]"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Strict JSON: NaN (a measurement that had no samples) becomes null."""
    path.write_text(json.dumps(_strict(data), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _strict(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {str(k): _strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict(v) for v in value]
    return value


def plot(path: Path, data: dict[str, Any]) -> None:
    """Throughput and p99 against offered load (closed-loop concurrency), one line per system."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_p) = plt.subplots(1, 2, figsize=(12, 4.5))
    systems = {"inferq": data["inferq"], **data["peers"]}
    for name, entry in systems.items():
        levels = [lv for lv in entry.get("levels", []) if lv["completed"]]
        if not levels:
            continue
        c = [lv["concurrency"] for lv in levels]
        ax_t.plot(c, [lv["throughput_per_s"] for lv in levels], marker="o", label=name)
        ax_p.plot(c, [lv["p99_ms"] for lv in levels], marker="o", label=name)
    ax_t.axhline(data["raw_best_seq_per_s"], color="grey", linestyle="--", label="raw best batch")
    for ax, ylabel in ((ax_t, "throughput (seq/s)"), (ax_p, "p99 latency (ms)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("requests in flight (closed loop)")
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
        ax.legend()
    ax_p.set_yscale("log")
    fig.suptitle(f"{data['model']} on {data['machine']['device']} ({data['machine']['cpus']} CPUs)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
