"""``bench --ceiling``'s arguments and its tables (from a bench.json-shaped dict, no stack)."""

import argparse
import json

import pytest
from rich.console import Console

from ops.bench.ceiling import CeilingPlan
from ops.bench.ceiling_report import capacity, needs, print_ceiling
from ops.bench.run import BenchPlan, _plain
from ops.cli import _burst_s, _layouts, parser


def test_layouts_parse_and_refuse():
    assert _layouts("1x1, 2x1,1x2") == ((1, 1), (2, 1), (1, 2))
    for bad in ("1", "0x1", "1x17", "ax1", "1*2"):
        with pytest.raises(argparse.ArgumentTypeError, match="INTAKESxWORKERS"):
            _layouts(bad)
    for bad in ("0", "-1", "nan", "601", "x"):
        with pytest.raises(argparse.ArgumentTypeError, match="seconds"):
            _burst_s(bad)
    args = parser().parse_args(
        ["bench", "--ceiling", "--ceiling-layouts", "2x2", "--burst-s", "5", "--profile", "--generators", "2"]
    )
    assert args.ceiling and args.profile and args.ceiling_layouts == ((2, 2),) and args.burst_s == 5.0
    assert args.generators == 2


def cpu(total):
    parts = {"client": 0.2, "broker": 0.05, "intake": 0.5, "redis": 0.25}
    return {**parts, "worker": total - sum(parts.values()), "total": total}


def test_tables_print_every_group_and_layout():
    row = {"intake_replicas": 1, "worker_processes": 1, "req_per_s": 700.0, "cpu_ms_per_request": cpu(2.0)}
    head = {
        **row,
        "requests": 14000,
        "whole_burst_req_per_s": 650.0,
        "publish_req_per_s": 2000.0,
        "cpu_busy_cores": 1.4,
        "busy_cores_by_process": {"client": 0.1, "broker": 0.05, "intake": 0.35, "redis": 0.2, "worker": 0.7},
        "load_avg_1m": 3.5,
        "cpu_bound_req_per_s": 1000.0,
        "steady_cpu_ms_per_request": cpu(1.9),
        "by_status": {"done": 13999, "failed": 1},
        "profile": {
            "worker": {
                "file": "w.txt",
                "samples": 10,
                "top": [{"function": "infer (tasks.py)", "self_pct": 60.0, "total_pct": 90.0}],
            }
        },
    }
    data = {
        "ceiling": {"model": "echo-384", "headline": head},
        "ceiling_lost": 0,
        "ceiling_duplicated": 0,
        "ceiling_scaling": [
            {**row, "lost": 0, "duplicated": 0},
            {**row, "intake_replicas": 2, "req_per_s": 900.0, "lost": 0, "duplicated": 0},
        ],
    }
    console = Console(record=True, width=160)
    print_ceiling(console, data)
    text = console.export_text()
    needles = (
        "700",
        "900",
        "client",
        "redis",
        "failed 1",
        "infer (tasks.py)",
        "60.0",
        "14,000",
        "1000 req/s",
    )
    for needle in needles:
        assert needle in text, needle


def test_capacity_and_what_a_gpu_needs():
    ms = cpu(2.0)  # intake 0.5 ms, worker 1.0 ms, redis 0.25 ms, broker 0.05 ms, client 0.2 ms
    assert capacity(ms) == pytest.approx(
        {"intake": 2000.0, "worker": 1000.0, "redis": 4000.0, "broker": 20000.0}
    )
    n = needs(ms, 10_000)
    assert n == pytest.approx({"intake": 5.0, "worker": 10.0, "redis": 2.5, "broker": 0.5, "cores": 20.0})


def test_the_full_bench_plans_the_ceiling_and_writes_its_plan():
    for plan in (BenchPlan(), BenchPlan.quick([])):
        assert isinstance(plan.ceiling, CeilingPlan)
        json.dumps({k: _plain(v) for k, v in plan.__dict__.items()})  # bench.json's "plan"
    assert CeilingPlan().steps((1, 1)) == 4 and CeilingPlan().steps((3, 3)) == 5
