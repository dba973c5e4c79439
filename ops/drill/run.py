"""``inferq-ops drill``: each fault under steady traffic, then every accepted request accounted for.

A drill stack of its own (free loopback ports, ``<state_dir>/drill``; broker, Redis, worker,
intake) serves every drill in turn. For each: publish ``requests`` unique requests at ``rate_per_s``;
once ``fault_at`` of them are accepted, inject the fault and bring the service back; wait until
every accepted request is terminal; count lost and duplicated ones. ``drill.json`` gets one entry
per drill (``requests``, ``lost``, ``duplicated``, statuses, recovery times, the redeliveries the
pipeline absorbed) and, when asked, the overload run (:mod:`ops.drill.overload`).
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ops.drill.faults import FAULTS, Fault, counter_totals, inject
from ops.drill.overload import run_overload
from ops.drill.poison import run_poison
from ops.drill.replies import REPLY_DRILLS, TOPIC, make_reply_topic, read_replies, reply_report
from ops.drill.rollout import ROLLOUT, run_rollout
from ops.drill.traffic import MODELS, Ledger, Publisher, keys_in_log
from ops.stack import Stack, on_free_ports
from schemas.naming import metrics_dir
from schemas.settings import Settings

SERVICES = ["broker", "redis", "worker", "intake", "delivery"]
POISON = "poison"  # hostile records between valid ones, on a stack of its own (ops.drill.poison)
COUNTERS = ("inferq_redeliveries_total", "inferq_duplicate_results_refused_total")
LOST_SAMPLE = 20  # lost ids named in the report


@dataclass(frozen=True)
class DrillPlan:
    drills: Sequence[str] = tuple(FAULTS)  # and/or POISON, ROLLOUT
    requests: int = 10_000
    rate_per_s: float = 150.0
    fault_at: float = 0.3  # share of the requests accepted before the fault
    timeout_s: float = 600.0
    overload_s: float = 0.0  # 0 = no overload run


def drill_settings(settings: Settings, state_dir: Path) -> Settings:
    """The drill stack's settings: free ports, its own folder, logs not shipped (the ES-API server
    shares the broker's process here and would take the model's cores), and stale queued requests
    sent again after 45 s (above the drill's longest queue wait, ~18 s at the default bound; the
    production default of 120 s would outlast the drill's wait for progress). The worker serves the
    two models the drill's traffic uses, not the generation models it would only load."""
    return on_free_ports(settings, state_dir).model_copy(
        update={
            "worker_models": ",".join(model for _, model in MODELS),
            "log_ship": False,
            "requeue_queued_after_s": min(settings.requeue_queued_after_s, 45.0),
            "reply_topics": f"*:{TOPIC}",  # the reply-topics drill's topic (ops.drill.replies)
        }
    )


def run_drills(
    settings: Settings, plan: DrillPlan, out: Path | None, console: Console | None = None
) -> dict[str, Any]:
    console = console or Console(quiet=True)
    report: dict[str, Any] = {"plan": {**plan.__dict__, "drills": list(plan.drills)}, "drills": []}
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed:.0f}/{task.total}"))
    faults = [d for d in plan.drills if d not in (POISON, ROLLOUT)]
    if faults or plan.overload_s:
        _fault_drills(settings, dataclasses.replace(plan, drills=faults), report, columns, console)
    if POISON in plan.drills:
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task("poison: hostile records among valid ones", total=plan.requests)
            report["poison"] = run_poison(
                settings, plan.requests, plan.timeout_s, lambda n: progress.update(bar, completed=n)
            )
            p = report["poison"]
            progress.console.print(
                f"poison: {p['requests']} requests, lost {p['lost']}, intake restarts {p['intake_restarts']}"
            )
    if ROLLOUT in plan.drills:
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task("rollout: canary 10 %, promote, roll back", total=plan.requests)
            report["rollout"] = run_rollout(
                settings,
                plan.requests,
                plan.rate_per_s,
                plan.timeout_s,
                lambda n: progress.update(bar, completed=n),
            )
            ro = report["rollout"]
            progress.console.print(
                f"rollout: {ro['requests']} requests, lost {ro['lost']}, duplicated {ro['duplicated']}, "
                f"misrouted {ro['misrouted']}"
            )
    # ``lost``: accepted requests without a terminal result at the end, after the producer re-sent
    # what the broker had dropped (``lost_by_broker``, reported apart)
    report["ok"] = (
        all(d["lost"] == 0 and d["duplicated"] == 0 for d in report["drills"])
        and report.get("poison", {}).get("ok", True)
        and all(r["ok"] for r in report.get("reply_topics", {}).values())
        and report.get("rollout", {}).get("ok", True)
    )
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "drill.json").write_text(json.dumps(report, indent=2) + "\n")
    print_report(console, report)
    return report


def _fault_drills(
    settings: Settings, plan: DrillPlan, report: dict[str, Any], columns: Any, console: Console
) -> None:
    """The fault drills and the overload run, on one drill stack."""
    ds = drill_settings(settings, (settings.state_dir / "drill").resolve())
    stack = Stack(ds)
    try:
        with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
            bar = progress.add_task("starting the drill stack", total=plan.requests)
            stack.up(only=SERVICES)
            ledger = Ledger(ds)
            try:
                for name in plan.drills:
                    what = _fault_of(name).what + (" (reply topics on)" if name in REPLY_DRILLS else "")
                    progress.reset(bar, description=f"{name}: {what}", total=plan.requests)
                    entry = one_drill(
                        stack, ds, ledger, name, plan, lambda n: progress.update(bar, completed=n)
                    )
                    if "reply_topics" in entry:  # by drill name
                        report.setdefault("reply_topics", {})[name] = entry.pop("reply_topics")
                    report["drills"].append(entry)
                    progress.console.print(
                        f"{name}: {entry['requests']} requests, lost {entry['lost']}, "
                        f"duplicated {entry['duplicated']}, {entry['by_status']}"
                    )
                if plan.overload_s:
                    progress.reset(bar, description="overload: 3 × capacity", total=plan.overload_s)
                    report["overload"] = run_overload(
                        stack, ds, ledger, plan.overload_s, lambda s: progress.update(bar, completed=s)
                    )
            finally:
                ledger.close()
    finally:
        stack.down()


def one_drill(
    stack: Stack,
    ds: Settings,
    ledger: Ledger,
    name: str,
    plan: DrillPlan,
    progress: Callable[[int], None],
) -> dict[str, Any]:
    fault = _fault_of(name)
    reply_topic = TOPIC if name in REPLY_DRILLS else None
    if reply_topic:
        make_reply_topic(ds)
    before = counter_totals(metrics_dir(ds), COUNTERS)
    t0 = time.monotonic()
    tag = f"{name}-{secrets.token_hex(3)}"
    pub = Publisher(ds, tag, plan.requests, plan.rate_per_s, reply_topic=reply_topic).start()
    while len(pub.accepted) < plan.requests * plan.fault_at and not pub.done.is_set():
        progress(len(pub.accepted))
        time.sleep(0.05)

    def running_now() -> dict[str, int]:
        """Requests running when the fault hits; a worker is killed only while some are (mid-batch)."""
        give_up = time.monotonic() + 10.0
        while True:
            states = ledger.statuses(list(pub.accepted))
            running = sum(st == "running" for st, _ in states.values())
            if running or fault.service != "worker" or time.monotonic() > give_up:
                return {"running_at_fault": running}
            time.sleep(0.005)

    observed = inject(stack, fault, running_now)

    def accepted() -> list[str]:
        progress(len(pub.accepted))
        return list(pub.accepted)

    final = ledger.wait_terminal(accepted, pub.done, plan.timeout_s)
    # An acknowledged request missing from the log was dropped by the broker (the local one loses a
    # few acknowledged records when it restarts): it never reached the pipeline. The producer
    # sends those again, same id and payload, as one that wants end-to-end delivery does.
    broker_lost = unfinished_ids(final) - keys_in_log(ds) if unfinished_ids(final) else set()
    if broker_lost:
        pub.resend(broker_lost)
        final = ledger.wait_terminal(accepted, pub.done, plan.timeout_s)
    after = counter_totals(metrics_dir(ds), COUNTERS)
    unfinished = unfinished_ids(final)
    duplicated = {rid for rid in final if ledger.announced[rid] > 1} | (ledger.changed & set(final))
    replies: dict[str, Any] = {}
    if reply_topic:  # every accepted request: exactly one distinct result on the topic
        found, read_s = read_replies(ds, set(final), plan.timeout_s)
        stored = {rid: body for rid, (_, body) in final.items()}
        replies = {"reply_topics": reply_report(final, stored, found, read_s)}
    return {
        "name": name,
        "fault": fault.what,
        "requests": len(pub.accepted),
        "lost": len(unfinished),
        # a few of them and their status (None: never admitted), for whoever reads a failed run
        "lost_sample": {rid: final[rid][0] for rid in sorted(unfinished)[:LOST_SAMPLE]},
        "lost_by_broker": len(broker_lost),
        "resent_after_broker_loss": len(broker_lost),
        "duplicated": len(duplicated),
        "by_status": dict(Counter(st or "missing" for st, _ in final.values())),
        "republished_by_producer": pub.republished,
        "redelivered_in_pipeline": int(after[COUNTERS[0]] - before[COUNTERS[0]]),
        "duplicate_results_refused": int(after[COUNTERS[1]] - before[COUNTERS[1]]),
        **observed,
        "wall_s": round(time.monotonic() - t0, 1),
        **replies,
    }


def _fault_of(name: str) -> Fault:
    """The fault a drill injects (the reply-topics drills' are in :mod:`ops.drill.replies`)."""
    return REPLY_DRILLS.get(name) or FAULTS[name]


def unfinished_ids(final: dict[str, tuple[str | None, bytes | None]]) -> set[str]:
    """The ids without a terminal result (missing, queued or running)."""
    return {rid for rid, (st, _) in final.items() if st in (None, "queued", "running")}


def print_report(console: Console, report: dict[str, Any]) -> None:
    t = Table("drill", "requests", "lost", "duplicated", "statuses", "absorbed", "back after s", "wall s")
    for d in report["drills"]:
        absorbed = (
            f"{d['republished_by_producer']} re-sent, {d['redelivered_in_pipeline']} re-read, "
            f"{d['duplicate_results_refused']} refused"
        )
        t.add_row(
            d["name"],
            str(d["requests"]),
            str(d["lost"]),
            str(d["duplicated"]),
            ", ".join(f"{k} {v}" for k, v in sorted(d["by_status"].items())),
            absorbed,
            f"{d['back_after_s']:.1f}",
            f"{d['wall_s']:.0f}",
        )
    if report["drills"]:
        console.print(t)
    if "overload" in report:
        console.print_json(data=report["overload"])
    if "poison" in report:
        console.print_json(data=report["poison"])
    for name, replies in report.get("reply_topics", {}).items():
        console.print(f"{name}: reply topic")
        console.print_json(data=replies)
    if "rollout" in report:
        console.print_json(data=report["rollout"])
